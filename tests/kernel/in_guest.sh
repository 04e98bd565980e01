#!/bin/bash
# Runs inside the virtme-ng guest (as root, host filesystem read-only except OUT): makes /dev/net/tun and
# runs the kernel tests. Usage: in_guest.sh OUT [pytest args...]
out=$1; shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
cut -d' ' -f1 /proc/uptime >"$out/boot"
cd "$repo" || exit 1
export PATH="$repo/.venv/bin:$PATH" PYTHONDONTWRITEBYTECODE=1 WGMESH_KERNEL_FIGURES="$out/figures"
export HOME=/tmp TMPDIR=/tmp WGMESH_REQUIRE_KERNEL=1
{
  # wireguard-go (the userspace comparison) needs the tun device; virtme has no udev to make it.
  modprobe tun && { [ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }; }
  # wireguard itself is not loaded here: the first link the tests create loads it, as on a gateway.
  echo "guest: $(uname -r), $(nproc) vCPUs, up $(cut -d' ' -f1 /proc/uptime) s"
  # Deadlines in the lab and the tests are budgets set on the host; emulation makes every step slower,
  # so they are multiplied by a factor measured here (wgmesh.lab.timescale), unless one was given.
  if [ -z "${WGMESH_TIME_SCALE:-}" ]; then
    scale=$("$repo/.venv/bin/python" -c 'from wgmesh.lab.timescale import describe; print(describe())') \
      && export WGMESH_TIME_SCALE=${scale%% *}
    echo "guest: time scale ${scale:-unknown}"
  fi
  "$repo/.venv/bin/pytest" -m kernel -p no:cacheprovider -o addopts="" -q -rs --durations=10 --basetemp=/tmp/pytest "$@"
  echo $? >"$out/rc.tmp"
  echo "guest: wireguard module $(cat /sys/module/wireguard/version 2>/dev/null || echo 'not loaded')"
} >"$out/pytest.log" 2>&1
mv "$out/rc.tmp" "$out/rc"
