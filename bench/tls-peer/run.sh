#!/usr/bin/env bash
# TLS echo: a subject server beside tokio-tls-echo (tokio + tokio-rustls, one thread), both
# driven by tls-client (one thread), alternating peer and subject, ROUNDS rounds per
# connection count. Prints each run's line, then a markdown table of MB/s (p99 us) per run
# and the subject/peer ratio of the medians of MB/s.
#
#   cargo build --release --manifest-path bench/tls-peer/Cargo.toml
#   cargo build --release --features tls --example echo_server
#   bench/tls-peer/run.sh
#
# knobs:
#   SUBJECT="target/release/examples/echo_server --layer 2"  server under test; gets
#       --addr 127.0.0.1:PORT --tls-cert CERT --tls-key KEY appended. It must be the server
#       binary itself (not a wrapper such as `cargo run`): its pid is killed after each run
#       and measured for CPU use.
#   PEER="BIN/tokio-tls-echo --threads 1"  the peer; gets --addr ... --cert CERT --key KEY
#   TLS_PEER_BIN=DIR   where tokio-tls-echo, tls-client and gen-cert are
#                      (default: $CARGO_TARGET_DIR/release, else bench/tls-peer/target/release)
#   CONNS_LIST="10 100" SIZE=4096 SECS=5 WARMUP=1 ROUNDS=3 PORT=19500 OUT=FILE (the runs' lines)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${TLS_PEER_BIN:-${CARGO_TARGET_DIR:-bench/tls-peer/target}/release}
SUBJECT=${SUBJECT:-target/release/examples/echo_server --layer 2}
PEER=${PEER:-$BIN/tokio-tls-echo --threads 1}
CONNS_LIST=${CONNS_LIST:-"10 100"}
SIZE=${SIZE:-4096}; SECS=${SECS:-5}; WARMUP=${WARMUP:-1}; ROUNDS=${ROUNDS:-3}
PORT=${PORT:-19500}
for b in tokio-tls-echo tls-client gen-cert; do
  [ -x "$BIN/$b" ] || { echo "no $BIN/$b: build bench/tls-peer first (or set TLS_PEER_BIN)" >&2; exit 1; }
done

DIR=$(mktemp -d)
OUT=${OUT:-$DIR/runs.txt}
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$BIN/gen-cert" --out "$DIR" >/dev/null
CERT=$DIR/cert.pem KEY=$DIR/key.pem

# Wait (at most 10 s) until something accepts on 127.0.0.1:$1, or the server ($2) has died.
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "server exited before opening port $1" >&2; return 1; }
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  return 1
}

run_one() { # name "cmd" "tls flags" conns
  local name=$1 cmd=$2 tls=$3 conns=$4 line=""
  PORT=$((PORT + 1))
  # shellcheck disable=SC2086  # cmd and tls are word lists
  $cmd --addr "127.0.0.1:$PORT" $tls >/dev/null 2>"$DIR/server.err" &
  SERVER_PID=$!
  if wait_port "$PORT" "$SERVER_PID"; then
    line=$(timeout --foreground $(( ${SECS%.*} + ${WARMUP%.*} + 60 )) "$BIN/tls-client" --addr "127.0.0.1:$PORT" \
      --ca "$CERT" --server-name localhost --conns "$conns" --size "$SIZE" --secs "$SECS" \
      --warmup "$WARMUP" --server-pid "$SERVER_PID" 2>"$DIR/client.err") \
      || { echo "$name conns=$conns: tls-client failed:" >&2; cat "$DIR/client.err" >&2; line=""; }
  else
    cat "$DIR/server.err" >&2
  fi
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  if [ -n "$line" ]; then line="$name $line"; else line="$name conns=$conns failed"; fi
  echo "$line" | tee -a "$OUT"
}

# Not in a pipeline: the EXIT trap must see the running server's pid.
: >"$OUT"
for conns in $CONNS_LIST; do
  for _ in $(seq 1 "$ROUNDS"); do
    run_one peer "$PEER" "--cert $CERT --key $KEY" "$conns"
    run_one subject "$SUBJECT" "--tls-cert $CERT --tls-key $KEY" "$conns"
  done
done

python3 - "$OUT" "$SIZE" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) conns=(\d+)", line)
    if not m:
        continue
    name, conns = m.groups()
    mb = re.search(r"MB/s=([\d.]+)", line); p99 = re.search(r"p99_us=(\d+)", line)
    rows.setdefault((conns, name), [])
    if mb and p99:
        rows[(conns, name)].append((float(mb.group(1)), int(p99.group(1))))
print(f"\n{sys.argv[2]}-byte messages over TLS, closed loop, one packet in flight per connection.\n")
print("| connections | tokio-tls-echo t=1 MB/s (p99 us) | subject MB/s (p99 us) | subject/peer ratio of medians |")
print("|---:|---|---|---:|")
for conns in sorted({c for c, _ in rows}, key=int):
    peer, sub = rows.get((conns, "peer"), []), rows.get((conns, "subject"), [])
    fmt = lambda rs: ", ".join(f"{m:.0f} ({p})" for m, p in rs) or "failed"
    ratio = (statistics.median(m for m, _ in sub) / statistics.median(m for m, _ in peer)
             if peer and sub and statistics.median(m for m, _ in peer) > 0 else float("nan"))
    print(f"| {conns} | {fmt(peer)} | {fmt(sub)} | {ratio:.2f} |")
PY
