#!/usr/bin/env bash
# The benchmark of docs/benchmarks.md, both deployments in one run, on this machine:
#   1. `distorch standalone` (embedded journal and SQLite stores in a fresh data dir);
#   2. the services as separate processes (engine, saga, projector, api) on a Kafka-compatible
#      broker: the one named by DISTORCH_TEST_KAFKA (host:port), or a tansu started here from
#      the binary scripts/test.sh installs (~/.cache/distorch/bin/tansu, SQLite storage).
# The same load (load-tests/src/main.rs, SDK workers over HTTP) runs against each. Prints the
# machine, then one JSON line per deployment, tagged with "deployment"; the Kafka line also
# has the records appended per step, by topic.
#
#   bash load-tests/bench.sh                 # RUNS=1000 CONCURRENCY=50 STEPS=10
#   RUNS=2000 CONCURRENCY=100 bash load-tests/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-1000}
CONCURRENCY=${CONCURRENCY:-50}
STEPS=${STEPS:-10}
TANSU=${TANSU:-$HOME/.cache/distorch/bin/tansu}

cargo build --release --quiet -p distorch -p distorch-load-tests
BIN=target/release/distorch
LOAD=target/release/distorch-load

WORK=$(mktemp -d)
PIDS=()
# Services whose broker is gone (tansu 0.6.0 has panicked at shutdown) may retry for good:
# each gets 10 s after SIGTERM, then SIGKILL.
cleanup() {
  local pid i
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for i in $(seq 100); do
      [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" == Z* || -z "$(ps -o pid= -p "$pid")" ]] && break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME ARGS...: runs the binary in the background and sets URL once it listens.
URL=
start() {
  local name=$1 out="$WORK/$1.out" i
  shift
  "$BIN" "$@" >"$out" 2>"$WORK/$name.err" &
  PIDS+=($!)
  for i in $(seq 600); do
    if grep -q "listening on " "$out" 2>/dev/null; then
      URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$out" | head -n1)
      return 0
    fi
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$WORK/$name.err" >&2
  echo "bench: $name did not start" >&2
  exit 1
}

# load DEPLOYMENT URL [EXTRA ARGS...]
load() {
  local deployment=$1 url=$2
  shift 2
  "$LOAD" --url "$url" --runs "$RUNS" --concurrency "$CONCURRENCY" --steps "$STEPS" "$@" \
    2>"$WORK/load-$deployment.err" |
    python3 -c 'import json,sys; d=json.loads(sys.stdin.readline()); d={"deployment": sys.argv[1], **d}; print(json.dumps(d))' "$deployment"
}

echo "machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -r)"

# 1. standalone
start standalone standalone --listen 127.0.0.1:0 --data-dir "$WORK/standalone"
load standalone "$URL"
kill "${PIDS[-1]}"
wait "${PIDS[-1]}" 2>/dev/null || true

# 2. distributed, on Kafka
broker=${DISTORCH_TEST_KAFKA:-}
if [[ -z "$broker" ]]; then
  [[ -x "$TANSU" ]] || {
    echo "bench: no broker: set DISTORCH_TEST_KAFKA or run scripts/test.sh once to install tansu" >&2
    exit 1
  }
  port=$(free_port)
  mkdir -p "$WORK/tansu"
  (cd "$WORK/tansu" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine sqlite://tansu.db) \
    >"$WORK/tansu.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && break
    sleep 0.2
  done
  broker="127.0.0.1:$port"
  echo "broker: $("$TANSU" --version) on $broker, storage sqlite://"
else
  echo "broker: $broker (DISTORCH_TEST_KAFKA)"
fi
prefix="bench-$$-$(date +%s)"
cat >"$WORK/distorch.toml" <<EOF
[backends]
log = "kafka://$broker"
store = "sqlite://$WORK/read.db"

[api]
topic_prefix = "$prefix"
EOF
for role in engine saga projector; do
  start "$role" --config "$WORK/distorch.toml" "$role" --listen 127.0.0.1:0
done
start api --config "$WORK/distorch.toml" api --listen 127.0.0.1:0
# The records each step costs the broker, by topic (records_per_step in the JSON line).
load kafka "$URL" --count-records --kafka "$broker" --topic-prefix "$prefix"
