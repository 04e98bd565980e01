#!/bin/bash
# Boots Debian's kernel under QEMU (virtme-ng, software emulation) with this machine's filesystem and
# runs `pytest -m kernel` inside it. Usage: run_vm.sh VMLINUZ [pytest args...]
# The guest writes pytest's output and exit status into a writable directory shared with the host;
# this script prints them and exits with pytest's status (1 if the guest never reported one).
set -uo pipefail
kernel=$1; shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
out="$repo/.cache/kernel/run"
rm -rf "$out" && mkdir -p "$out"
export PATH="$repo/.venv/bin:$PATH"
started=$(date +%s)
args=$(printf " %q" "$@")  # the guest runs one shell string: keep each argument whole
# A guard against a guest that hangs, not a speed expectation: the deadlines inside scale with the guest.
timeout 2700 vng --run "$kernel" --disable-kvm --cpus 2 --memory 2G --rwdir "$out" \
  --exec "$repo/tests/kernel/in_guest.sh $out$args" >"$out/console.log" 2>&1 &
vm=$!
# Stream the guest's pytest output while it runs.
while [ ! -f "$out/pytest.log" ] && kill -0 $vm 2>/dev/null; do sleep 1; done
[ -f "$out/pytest.log" ] && tail -n +1 -f --pid=$vm "$out/pytest.log"
wait $vm; vng_rc=$?
[ -s "$out/figures" ] && { echo "--- figures (real kernel WireGuard, QEMU TCG, 2 vCPUs) ---"; cat "$out/figures"; }
echo "--- vm: $(( $(date +%s) - started )) s in all; guest booted in $(cat "$out/boot" 2>/dev/null || echo ?) s of uptime"
if [ ! -s "$out/rc" ]; then
  echo "test-kernel: the guest reported no pytest status (vng exit $vng_rc); console tail:" >&2
  tail -30 "$out/console.log" >&2
  exit 1
fi
exit "$(cat "$out/rc")"
