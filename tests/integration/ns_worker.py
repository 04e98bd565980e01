"""Runs a DataPlane inside a network namespace for the integration tests.

Started as `ip netns exec NS python ns_worker.py`, so it and the wireguard-go it starts live in NS.
Reads one JSON command per line on stdin and answers one JSON line on stdout; logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import Any

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


def main() -> None:
    """Serve commands until stdin closes or `exit` arrives."""
    logs.setup("debug")
    # pyroute2 and asyncio narrate every netlink message at debug level; ours is what the tests need.
    for noisy in ("pyroute2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    plane: DataPlane | None = None
    for line in sys.stdin:
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
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
