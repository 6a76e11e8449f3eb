#!/usr/bin/env bash
# Soak of `distorch standalone`: constant load in rounds against one process, sampling its
# memory and its data dir after every round and while it idles afterwards. A service that
# runs for weeks must stay flat: resident memory may grow while caches fill, then plateaus
# however many runs have finished.
#
#   bash load-tests/soak.sh                       # ROUNDS=6 RUNS=2000 CONCURRENCY=100 STEPS=10
#   ROUNDS=12 RUNS=4000 bash load-tests/soak.sh
#
# Prints the machine, then one JSON line per sample:
#   {"phase":"load","round":3,"finished_runs":6000,"rss_mb":..,"anon_mb":..,"data_mb":..,
#    "steps_per_s":..,"p99_ms":..,"failed":0}
# and a last line: the growth of anonymous memory from the second round to the last per 1,000
# runs ("anon_growth_mb_per_1000_runs", about 0 once memory has plateaued), the data dir's
# bytes per step, and the anonymous memory after idling.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-6}
RUNS=${RUNS:-2000}
CONCURRENCY=${CONCURRENCY:-100}
STEPS=${STEPS:-10}
IDLE_S=${IDLE_S:-20}

cargo build --release --quiet -p distorch -p distorch-load-tests
BIN=target/release/distorch
LOAD=target/release/distorch-load

WORK=$(mktemp -d)
PID=
cleanup() {
  if [[ -n "$PID" ]]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" standalone --listen 127.0.0.1:0 --data-dir "$WORK/data" >"$WORK/out" 2>"$WORK/err" &
PID=$!
URL=
for _ in $(seq 600); do
  URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/out" | head -n1)
  [[ -n "$URL" ]] && break
  kill -0 "$PID" 2>/dev/null || { tail -n 20 "$WORK/err" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$URL" ]] || { echo "soak: standalone did not start" >&2; exit 1; }

echo "machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), $(free -g | awk '/^Mem:/ {print $2}') GiB, $(uname -r)"
echo "load: $ROUNDS rounds of $RUNS runs of $STEPS no-op steps at concurrency $CONCURRENCY"

# sample PHASE ROUND FINISHED [LOAD_JSON]: one JSON line with the process's memory and disk.
sample() {
  local rss anon data
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$PID/status")
  anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$PID/status")
  data=$(du -sk "$WORK/data" | cut -f1)
  python3 - "$1" "$2" "$3" "$rss" "$anon" "$data" "${4:-{\}}" <<'PY'
import json, sys
phase, rnd, finished, rss, anon, data, load = sys.argv[1:]
load = json.loads(load)
out = {"phase": phase, "round": int(rnd), "finished_runs": int(finished),
       "rss_mb": round(int(rss) / 1024, 1), "anon_mb": round(int(anon) / 1024, 1),
       "data_mb": round(int(data) / 1024, 1)}
for k in ("steps_per_s", "p50_ms", "p99_ms", "failed"):
    if k in load:
        out[k] = load[k]
print(json.dumps(out), flush=True)
PY
}

SAMPLES="$WORK/samples"
sample idle 0 0 | tee -a "$SAMPLES"
finished=0
for round in $(seq "$ROUNDS"); do
  result=$("$LOAD" --url "$URL" --runs "$RUNS" --concurrency "$CONCURRENCY" --steps "$STEPS" \
    2>>"$WORK/load.err")
  finished=$((finished + RUNS))
  sample load "$round" "$finished" "$result" | tee -a "$SAMPLES"
done
sleep "$IDLE_S"
sample idle "$ROUNDS" "$finished" | tee -a "$SAMPLES"

python3 - "$SAMPLES" "$STEPS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = int(sys.argv[2])
load = [r for r in rows if r["phase"] == "load"]
if len(load) >= 3:
    a, b = load[1], load[-1]
    runs = b["finished_runs"] - a["finished_runs"]
    print(json.dumps({
        "anon_growth_mb_per_1000_runs": round((b["anon_mb"] - a["anon_mb"]) * 1000 / runs, 2),
        "data_kb_per_step": round(b["data_mb"] * 1024 / (b["finished_runs"] * steps), 2),
        "idle_anon_mb": rows[-1]["anon_mb"],
    }))
PY
