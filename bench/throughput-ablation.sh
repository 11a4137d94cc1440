#!/usr/bin/env bash
# Where does the gateway path's throughput go? (issue #9, outcome 2)
#
#   sudo bench/throughput-ablation.sh [rounds] [seconds]      (after npm run build; ~6 min)
#
# Brings up the example lab (file mode), stops its agents (the kernel keeps forwarding; nothing
# repairs what a variant changes), and measures pod payments/pay-1's TCP throughput (iperf3)
# through its gateway (198.51.100.10, tunnelled and SNATed) and direct (198.51.100.200, the node's
# own masquerade), back to back in alternating order, under each variant in turn. Each variant
# is cumulative on top of the ones before it, except where it says it undoes one. Prints the median
# paired gateway/direct ratio per variant and the machine's load. Everything lives in network
# namespaces named se-abl<pid>-*, removed on exit.
set -euo pipefail
ROUNDS=${1:-8}
SECONDS_PER_RUN=${2:-3}
cd "$(dirname "$0")/.."
. scripts/node-env.sh
P="se-abl$$"
CLI=(node dist/cli/main.js)
AGENTS=()

cleanup() {
  for pid in "${AGENTS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
  "${CLI[@]}" lab down --name "$P" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

"${CLI[@]}" lab up -f examples/lab.yaml --mode file --name "$P" >/dev/null
# Wait until pay-1 leaves through a gateway (the lab's Internet sees an egress IP, not node1's).
for _ in $(seq 1 60); do
  if "${CLI[@]}" lab status --name "$P" 2>/dev/null | grep -q "^payments/pay-1 .*192\.0\.2\.[12]0 .* yes"; then break; fi
  sleep 1
done
mapfile -t AGENTS < <(pgrep -f "dist/cli/main.js agent .*/run/static-egress-lab/$P/" || true)
[ "${#AGENTS[@]}" -gt 0 ] || mapfile -t AGENTS < <(pgrep -f "agent (node|gateway) .*$P" || true)
for pid in "${AGENTS[@]}"; do kill -STOP "$pid"; done

nsx() { ip netns exec "$P-$1" "${@:2}"; }
iperf_gbps() {
  nsx pod-payments-pay-1 iperf3 -c "$1" -p "$2" -t "$SECONDS_PER_RUN" -J |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["end"]["sum_received"]["bits_per_second"]/1e9)'
}
measure() {
  nsx internet pkill iperf3 || true
  sleep 0.3
  nsx internet iperf3 -s -D -B 198.51.100.10 -p 5201
  nsx internet iperf3 -s -D -B 198.51.100.200 -p 5202
  sleep 1
  local ratios=() g d
  for r in $(seq 1 "$ROUNDS"); do
    if ((r % 2)); then g=$(iperf_gbps 198.51.100.10 5201); d=$(iperf_gbps 198.51.100.200 5202)
    else d=$(iperf_gbps 198.51.100.200 5202); g=$(iperf_gbps 198.51.100.10 5201); fi
    ratios+=("$(python3 -c "print($g/$d)")")
  done
  nsx internet pkill iperf3 || true
  python3 - "$1" "$(cut -d' ' -f1 /proc/loadavg)" "${ratios[@]}" <<'EOF'
import statistics, sys
name, load, rs = sys.argv[1], sys.argv[2], [float(x) for x in sys.argv[3:]]
print(f"| {name} | {statistics.median(rs):.3f} ({min(rs):.2f}–{max(rs):.2f}) | {load} |")
EOF
}
veths() { nsx "$1" ip -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1; }
hosts() { ip netns list | awk '{print $1}' | grep "^$P-" | sed "s/^$P-//"; }

echo "| variant (cumulative) | gateway / direct, paired: median (min–max) | load (1 min) at the end |"
echo "|---|---|---|"
measure "as built (agents stopped after convergence)"

for k in iptables ip6tables arptables; do nsx fabric sysctl -qw "net.bridge.bridge-nf-call-$k=0"; done
measure "no bridge netfilter in the fabric (the VPC and the Internet segment)"

for g in gw-a gw-b; do
  nsx "$g" nft -f - <<'EOF'
delete table ip static_egress_meter
delete chain ip static_egress_gw health_from_nodes
delete chain ip static_egress_gw tunnel_from_nodes
delete chain ip static_egress_gw clamp_mss
flush chain ip static_egress_gw forward_selected
chain ip static_egress_gw forward_selected { policy accept; }
EOF
done
measure "gateways: every filter chain and the meter removed (only notrack and SNAT left)"

if command -v ethtool >/dev/null; then
  for h in $(hosts); do
    for d in $(veths "$h"); do
      nsx "$h" ethtool -K "$d" gro on >/dev/null 2>&1 || true
      nsx "$h" sh -c "echo 1 > /sys/class/net/$d/threaded" || true
    done
  done
  measure "every veth: GRO on and threaded NAPI (each host's receive work in a thread of its own)"
  for h in $(hosts); do
    for d in $(veths "$h"); do
      nsx "$h" sh -c "echo 0 > /sys/class/net/$d/threaded" || true
      nsx "$h" ethtool -K "$d" gro off >/dev/null 2>&1 || true
    done
  done
fi

for h in gw-a gw-b internet; do nsx "$h" sh -c 'echo 2 > /sys/class/net/eth0/queues/rx-0/rps_cpus'; done
measure "threaded NAPI undone; RPS: the gateways' and the Internet's receive work on CPU 1 (two 'machines')"

if zcat /proc/config.gz 2>/dev/null | grep -q '^CONFIG_NF_FLOW_TABLE=[ym]'; then
  echo "(this kernel has nftables flowtables: a fast-path variant is worth adding here)"
else
  echo "(no nftables flowtable variant: this kernel has CONFIG_NF_FLOW_TABLE unset)"
fi
