"""Runs DataPlanes inside network namespaces for the integration and kernel tests.

One zygote per test session (`python ns_worker.py --zygote SOCKET`) imports the data plane once, then
forks a worker per request: the child joins the namespace the request names (`setns`, as
`ip netns exec` does, so the wireguard-go it starts lives there too), sends its pid, and serves one
JSON command per line on the connection, answering one JSON line each; its logs go to the file the
request names. Under QEMU's emulation a Python start-up costs ~20 s, so this pays it once per session
instead of once per worker.

Unlike `ip netns exec`, the child keeps the zygote's mount namespace: /sys shows the host's links.
Nothing a worker runs reads per-namespace sysfs (netlink and /proc/sys/net follow the network
namespace; /sys/module is global).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import IO, Any

from wgmesh import logs
from wgmesh.agent.dataplane import DataPlane
from wgmesh.errors import WgmeshError
from wgmesh.models import NetMap


def _observe(plane: DataPlane) -> dict[str, Any]:
    device = plane.wireguard.observe()
    return {
        "listen_port": device.spec.listen_port,
        "public_key": device.public_key,
        "peers": {
            key: {
                "allowed_ips": list(p.allowed_ips),
                "endpoint": str(p.endpoint) if p.endpoint else None,
                "keepalive": p.keepalive,
            }
            for key, p in device.spec.peers.items()
        },
    }


def handle(plane: DataPlane | None, command: dict[str, Any]) -> tuple[DataPlane | None, dict[str, Any]]:
    """Run one command; returns the (possibly new) data plane and the answer."""
    cmd = command["cmd"]
    if cmd == "init":
        plane = DataPlane(
            command["ifname"],
            command.get("backend", "userspace"),
            command["private_key"],
            command["listen_port"],
            masquerade=command.get("masquerade", False),
        )
        return plane, {}
    if cmd == "cleanup_interface":
        DataPlane.cleanup_interface(command["ifname"])
        return plane, {}
    assert plane is not None, "init first"
    if cmd == "up":
        plane.up()
        return plane, {"pid": getattr(plane.wireguard, "pid", None), "kind": plane.wireguard.kind}
    if cmd == "apply":
        result = plane.apply(NetMap.model_validate(command["netmap"]), command.get("overrides"))
        return plane, {
            "operations": result.operations,
            "device_ops": result.device_ops,
            "route_ops": result.route_ops,
            "seconds": result.seconds,
            "shadowed": [s.model_dump() for s in result.shadowed],
        }
    if cmd == "observe":
        return plane, _observe(plane)
    if cmd == "stats":
        # The data plane's counters alone: paths are the agent's path controller's to say.
        return plane, {
            "peers": [
                {
                    "public_key": key,
                    "rx_bytes": st.rx_bytes,
                    "tx_bytes": st.tx_bytes,
                    "last_handshake": st.last_handshake.isoformat() if st.last_handshake else None,
                    "endpoint": str(st.endpoint) if st.endpoint else None,
                }
                for key, st in sorted(plane.observe_stats().items())
            ]
        }
    if cmd == "close":
        plane.close()
        return plane, {}
    if cmd == "cleanup":
        plane.cleanup()
        return plane, {}
    raise ValueError(f"unknown command {cmd!r}")


CLONE_NEWNET = 0x40000000


def enter_namespace(ns: str) -> None:
    """Move this (single-threaded, just forked) process into network namespace `ns`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {ns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def serve(commands: IO[str], answers: IO[str]) -> None:
    """Serve commands until the connection closes or `exit` arrives."""
    plane: DataPlane | None = None
    for line in commands:
        command = json.loads(line)
        if command["cmd"] == "exit":
            break
        try:
            plane, answer = handle(plane, command)
            answer["ok"] = True
        except WgmeshError as exc:
            answer = {"ok": False, "error": exc.message, "code": exc.code}
        except Exception as exc:
            traceback.print_exc()
            answer = {"ok": False, "error": repr(exc), "code": "exception"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def worker(conn: socket.socket, request: dict[str, Any]) -> int:
    """The forked child: join the namespace, log to the request's file, then serve `conn`."""
    answers = conn.makefile("w", encoding="utf-8")
    try:
        # The zygote reaps its children automatically; this child waits for its own (wireguard-go).
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        enter_namespace(request["ns"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # Stray prints (ours or a child program's) land in the log, never in the zygote's pipe.
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    except Exception as exc:
        answers.write(json.dumps({"error": f"worker for {request['ns']} did not start: {exc!r}"}) + "\n")
        answers.flush()
        return 1
    answers.write(json.dumps({"pid": os.getpid()}) + "\n")
    answers.flush()
    serve(conn.makefile("r", encoding="utf-8"), answers)
    return 0


def zygote(path: str) -> None:
    """Listen on `path`; fork a worker per connection; exit when stdin (the test session) closes."""
    logs.setup("debug")
    # pyroute2 and asyncio narrate every netlink message at debug level; ours is what the tests need.
    for noisy in ("pyroute2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    events.register(sys.stdin, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in events.select():
            if key.fileobj is sys.stdin:
                if not sys.stdin.readline():
                    return
                continue
            conn, _ = listener.accept()
            request = json.loads(conn.makefile("r", encoding="utf-8").readline())
            if os.fork() == 0:
                code = 1
                try:
                    listener.close()
                    code = worker(conn, request)
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(code)
            conn.close()


if __name__ == "__main__":
    if sys.argv[1:2] != ["--zygote"] or len(sys.argv) != 3:
        sys.exit("usage: ns_worker.py --zygote SOCKET")
    zygote(sys.argv[2])
