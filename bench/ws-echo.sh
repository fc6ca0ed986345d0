#!/usr/bin/env bash
# WebSocket echo beside tokio-ws-echo (tokio-tungstenite, one thread), both driven by the
# peers' ws-client, alternating, ROUNDS rounds: prints each run's line and the ratio of medians.
#   PEERS_BIN=/tmp/peers-target/release bench/ws-echo.sh
# knobs: CONNS_LIST="10 100" SECS=3 WARMUP=1 ROUNDS=3 SUBJECT="target/release/examples/echo_server --layer 3 --ws"
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${PEERS_BIN:-/tmp/peers-target/release}
SUBJECT=${SUBJECT:-target/release/examples/echo_server --layer 3 --ws}
CONNS_LIST=${CONNS_LIST:-"10 100"}
SECS=${SECS:-3}; WARMUP=${WARMUP:-1}; ROUNDS=${ROUNDS:-3}
PORT=${PORT:-19400}
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
run_one() { # name cmd conns
  local name=$1 cmd=$2 conns=$3
  PORT=$((PORT + 1))
  $cmd --addr 127.0.0.1:$PORT >/dev/null 2>&1 &
  local pid=$!
  wait_port $PORT
  local line
  line=$(timeout 120 "$BIN/ws-client" --addr 127.0.0.1:$PORT --conns "$conns" --size 4096 \
    --secs "$SECS" --warmup "$WARMUP" --server-pid $pid 2>/dev/null || true)
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
  echo "$name conns=$conns $line"
}
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
for conns in $CONNS_LIST; do
  for r in $(seq 1 "$ROUNDS"); do
    run_one peer "$BIN/tokio-ws-echo --threads 1" "$conns"
    run_one subject "$SUBJECT" "$conns"
  done
done | tee /tmp/ws-echo-runs.txt
python3 - /tmp/ws-echo-runs.txt <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, conns = line.split()[0], re.search(r"conns=(\d+)", line).group(1)
    mb = re.search(r"MB/s=([\d.]+)", line); p99 = re.search(r"p99_us=(\d+)", line)
    if mb: rows.setdefault((conns, name), []).append((float(mb.group(1)), int(p99.group(1))))
print("\n| connections | tokio-ws-echo t=1 MB/s (p99 us) | kendynet MB/s (p99 us) | ratio of medians |")
print("|---:|---|---|---:|")
for conns in sorted({c for c, _ in rows}, key=int):
    peer, sub = rows.get((conns, "peer"), []), rows.get((conns, "subject"), [])
    fmt = lambda rs: ", ".join(f"{m:.0f} ({p})" for m, p in rs)
    ratio = statistics.median(m for m, _ in sub) / statistics.median(m for m, _ in peer) if peer and sub else float("nan")
    print(f"| {conns} | {fmt(peer)} | {fmt(sub)} | {ratio:.2f} |")
PY
