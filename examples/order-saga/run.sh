#!/usr/bin/env bash
# examples/order-saga/run.sh: the order saga end to end, with a Python, a TypeScript and a
# Rust worker serving its steps, checked through the CLI.
#
#   DISTORCH_BIN=/abs/path/to/target/debug/distorch bash examples/order-saga/run.sh
#
# It builds the Rust worker (cargo --offline; a member of the repository's workspace),
# installs the Python SDK into a venv and packs the TypeScript SDK, starts
# `distorch standalone` on a free port and the three workers, applies order-saga.yaml with
# `distorch definition apply`, starts three orders with `distorch workflow start --wait`
# (one completes, one has its card declined, one cannot be shipped), and checks with
# `distorch workflow show -o json` that each ended as expected and that each task was served
# by the worker of the expected language. Everything it started is stopped on exit.
#
# Environment:
#   DISTORCH_BIN      the server and CLI binary (required; `cargo build -p distorch --offline`)
#   DISTORCH_CACHE    cache dir (default ~/.cache/distorch): the venv is
#                     $DISTORCH_CACHE/venv-example, npm's cache $DISTORCH_CACHE/npm
#   CARGO_TARGET_DIR  where the Rust worker is built (default: the repository's target/, so
#                     the crates the repository already compiled with the same features are
#                     reused)
#   PYTHON            the interpreter for the venv (default python3; 3.10+)
#
# Prints one line per check and ends with `example: N passed, M failed`; exits non-zero
# when any check failed or a step could not run.
set -euo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$HERE/../.." && pwd)
DISTORCH_CACHE=${DISTORCH_CACHE:-$HOME/.cache/distorch}
PYTHON=${PYTHON:-python3}
START=$SECONDS

die() { echo "examples/order-saga/run.sh: $*" >&2; exit 1; }
step() { printf '==> %s (%ds)\n' "$*" $((SECONDS - START)); }

# ---- prerequisites -------------------------------------------------------------------------
[[ -n "${DISTORCH_BIN:-}" ]] || die "DISTORCH_BIN is not set: point it at the distorch binary (cargo build -p distorch --offline; target/debug/distorch)"
[[ -f "$DISTORCH_BIN" && -x "$DISTORCH_BIN" ]] || die "DISTORCH_BIN=$DISTORCH_BIN is not an executable file"
DISTORCH_BIN=$(cd -- "$(dirname -- "$DISTORCH_BIN")" && pwd)/$(basename -- "$DISTORCH_BIN")
command -v cargo >/dev/null || die "cargo is missing (the Rust worker is built with it)"
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are missing (Node.js 18+)"
(( $(node -p 'process.versions.node.split(".")[0]') >= 18 )) || die "Node.js 18+ is required, found $(node --version)"
command -v "$PYTHON" >/dev/null || die "no $PYTHON on PATH (set PYTHON to a Python 3.10+ interpreter)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' ||
  die "$("$PYTHON" --version 2>&1) is too old: the Python SDK needs 3.10+"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/distorch-example.XXXXXX")
PIDS=()      # everything started here, stopped on exit
SERVER_PID=""
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the Rust worker -----------------------------------------------------------------------
# A member of the repository's workspace: the build phase has built it already, so this is
# quick; --offline uses the crates the workspace fetched.
step "building the Rust worker"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
cargo build --offline --quiet --manifest-path "$REPO_ROOT/Cargo.toml" -p order-saga-rust-worker >"$WORK/cargo.log" 2>&1 ||
  { cat "$WORK/cargo.log" >&2; die "the Rust worker does not build (cargo build --offline)"; }
RUST_WORKER="$CARGO_TARGET_DIR/debug/order-saga-rust-worker"
[[ -x "$RUST_WORKER" ]] || die "no $RUST_WORKER after the build"

# ---- the Python SDK ------------------------------------------------------------------------
# A venv of the example's own; flit_core (the SDK's build backend) is installed into it once,
# so later installs of the SDK need no network.
VENV="$DISTORCH_CACHE/venv-example"
KEY=$("$PYTHON" -c 'import sys; print(sys.version)' | sha256sum | cut -c1-16)
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.key" 2>/dev/null)" != "$KEY" ]]; then
  step "creating $VENV"
  rm -rf "$VENV"
  mkdir -p "$DISTORCH_CACHE"
  "$PYTHON" -m venv "$VENV" || die "could not create a venv (on Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "flit_core>=3.4,<5" ||
    { rm -rf "$VENV"; die "could not install flit_core from PyPI into $VENV"; }
  echo "$KEY" >"$VENV/.key"
fi
step "installing the Python SDK into $VENV"
mkdir -p "$WORK/pysdk"
cp -r "$REPO_ROOT/sdks/python/pyproject.toml" "$REPO_ROOT/sdks/python/README.md" "$REPO_ROOT/sdks/python/src" "$WORK/pysdk/"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
  --no-deps --force-reinstall "$WORK/pysdk" >"$WORK/pip.log" 2>&1 ||
  { cat "$WORK/pip.log" >&2; die "pip could not install the Python SDK"; }

# ---- the TypeScript SDK --------------------------------------------------------------------
# Built from source (tsc, as sdks/typescript/test.sh does), packed, and installed from the
# tarball into a project of its own, as an application would install it.
step "building and packing the TypeScript SDK"
export npm_config_cache="$DISTORCH_CACHE/npm" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
TS_SDK="$REPO_ROOT/sdks/typescript"
if [[ ! -x "$TS_SDK/node_modules/.bin/tsc" ]]; then
  (cd "$TS_SDK" && npm ci --prefer-offline) >"$WORK/npm.log" 2>&1 ||
    { cat "$WORK/npm.log" >&2; die "npm ci failed in sdks/typescript"; }
fi
(cd "$TS_SDK" && ./node_modules/.bin/tsc -p tsconfig.json) || die "tsc failed in sdks/typescript"
(cd "$TS_SDK" && npm pack --ignore-scripts --pack-destination "$WORK") >"$WORK/npm.log" 2>&1 ||
  { cat "$WORK/npm.log" >&2; die "npm pack failed in sdks/typescript"; }
mkdir -p "$WORK/ts-worker"
cp "$HERE/typescript-worker/payments.mjs" "$WORK/ts-worker/"
echo '{"name":"order-saga-payments","private":true,"type":"module"}' >"$WORK/ts-worker/package.json"
(cd "$WORK/ts-worker" && npm install --offline --no-audit --no-fund "$WORK"/distorch-sdk-*.tgz) >"$WORK/npm.log" 2>&1 ||
  { cat "$WORK/npm.log" >&2; die "the packed TypeScript SDK does not install"; }

# ---- the server ----------------------------------------------------------------------------
step "starting distorch standalone"
mkdir -p "$WORK/data"
# Its data dir as the working directory, so no stray ./distorch.toml applies.
(cd "$WORK/data" && RUST_LOG=${RUST_LOG:-warn} exec "$DISTORCH_BIN" standalone --listen 127.0.0.1:0 --data-dir "$WORK/data") \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
URL=""
for _ in $(seq 600); do
  URL=$(sed -nE 's#.*distorch standalone listening on (http://[^ ]+).*#\1#p' "$WORK/server.log" | head -n 1)
  [[ -n "$URL" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$URL" ]] || { cat "$WORK/server.log" >&2; die "the server did not start within 60 s"; }
export DISTORCH_URL=$URL
echo "server: $URL"
# The CLI and the workers find the server through DISTORCH_URL.
cli() { "$DISTORCH_BIN" "$@"; }

# ---- the workers ---------------------------------------------------------------------------
step "starting the workers"
"$VENV/bin/python" "$HERE/python-worker/inventory.py" >"$WORK/python.log" 2>&1 &
PY_PID=$!
PIDS+=("$PY_PID")
(cd "$WORK/ts-worker" && exec node payments.mjs) >"$WORK/typescript.log" 2>&1 &
TS_PID=$!
PIDS+=("$TS_PID")
"$RUST_WORKER" >"$WORK/rust.log" 2>&1 &
RS_PID=$!
PIDS+=("$RS_PID")

# ---- the runs ------------------------------------------------------------------------------
step "applying the definition"
cli definition apply -f "$HERE/order-saga.yaml"

# order NAME CARD ADDRESS: the input of one order.
order() {
  printf '{"order_id":"%s","items":[{"sku":"mug","qty":2},{"sku":"tee","qty":1}],"amount":42.5,"card":"%s","address":"%s"}' "$1" "$2" "$3"
}
step "starting three orders and waiting for them"
declare -A RC
for spec in "ok 4242-4242-4242-4242 1_Main_St" "declined 4000-0000-0000-0002 1_Main_St" "lost 4242-4242-4242-4242 nowhere"; do
  read -r name card address <<<"$spec"
  address=${address//_/ }
  # --wait prints the ended run; exit 0 = completed, 1 = failed/compensated/cancelled.
  cli workflow start order-saga --input "$(order "o-$name" "$card" "$address")" --wait --timeout 60s -o json \
    >"$WORK/$name.start.json" 2>"$WORK/$name.start.err" &
  RC[$name]=$!
done
for name in ok declined lost; do
  if wait "${RC[$name]}"; then RC[$name]=0; else RC[$name]=$?; fi
done

# ---- the checks ----------------------------------------------------------------------------
PASSED=0 FAILED=0
check() { # check DESCRIPTION COMMAND...: one counted check
  local what=$1
  shift
  if "$@"; then
    PASSED=$((PASSED + 1))
    echo "ok   $what"
  else
    FAILED=$((FAILED + 1))
    echo "FAIL $what"
  fi
}
# verify NAME PYTHON-EXPR: the expression over the run `r` (the JSON of `workflow show -o json`)
# and its tasks by type `t` must be true; prints the run when it is not.
verify() {
  "$VENV/bin/python" - "$WORK/$1.json" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = {}
for task in r.get("tasks", []):
    t.setdefault(task["task"], []).append(task)
lang = {"reserve-stock": "python", "release-stock": "python", "charge-card": "typescript",
        "refund-card": "typescript", "ship-order": "rust"}
def served_right(task):
    """Served by the expected language's worker: its worker_id and its output say so."""
    want = lang[task["task"]]
    by_id = (task.get("worker_id") or "").startswith(want + "-")
    out = task.get("output")
    return by_id and (task["status"] != "completed" or (isinstance(out, dict) and out.get("served_by") == want))
ok = eval(sys.argv[2], {"r": r, "t": t, "served_right": served_right})
if not ok:
    print(json.dumps(r, indent=2)[:6000], file=sys.stderr)
sys.exit(0 if ok else 1)
PY
}

for name in ok declined lost; do
  id=$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("workflow_id",""))' "$WORK/$name.start.json" 2>/dev/null || true)
  if [[ -z "$id" ]]; then
    check "order o-$name: workflow start --wait printed the run" false
    cat "$WORK/$name.start.err" >&2
    echo '{}' >"$WORK/$name.json"
    continue
  fi
  cli workflow show "$id" -o json >"$WORK/$name.json" || echo '{}' >"$WORK/$name.json"
  echo "order o-$name: run $id"
done

check "o-ok: workflow start --wait exits 0" test "${RC[ok]}" = 0
check "o-ok: completed" verify ok 'r["status"] == "completed"'
check "o-ok: reserve, charge and ship completed once each, nothing compensated" \
  verify ok '[(x["task"], x["status"], x["attempt"]) for x in r["tasks"]] == [("reserve-stock", "completed", 1), ("charge-card", "completed", 1), ("ship-order", "completed", 1)]'
check "o-ok: the output names the reservation, the charge and the tracking number" \
  verify ok 'r["output"] == {"order_id": "o-ok", "reservation": "res-o-ok", "charge": "ch-o-ok", "tracking": "trk-o-ok"}'
check "o-ok: reserve-stock served by the Python worker" verify ok 'served_right(t["reserve-stock"][0])'
check "o-ok: charge-card served by the TypeScript worker" verify ok 'served_right(t["charge-card"][0])'
check "o-ok: ship-order served by the Rust worker" verify ok 'served_right(t["ship-order"][0])'

check "o-declined: workflow start --wait exits 1" test "${RC[declined]}" = 1
check "o-declined: compensated" verify declined 'r["status"] == "compensated"'
check "o-declined: the card was declined once, not retried" \
  verify declined 't["charge-card"][0]["status"] == "failed" and t["charge-card"][0]["attempt"] == 1 and t["charge-card"][0]["error"]["type"] == "card_declined"'
check "o-declined: nothing shipped, nothing refunded" verify declined '"ship-order" not in t and "refund-card" not in t'
check "o-declined: the stock was released by a compensation" \
  verify declined '[(x["task"], x["kind"], x["status"]) for x in r["tasks"] if x["kind"] == "compensation"] == [("release-stock", "compensation", "completed")] and t["release-stock"][0]["output"]["released"] == "res-o-declined"'
check "o-declined: charge-card failed on the TypeScript worker" verify declined 'served_right(t["charge-card"][0])'
check "o-declined: release-stock served by the Python worker" verify declined 'served_right(t["release-stock"][0])'

check "o-lost: workflow start --wait exits 1" test "${RC[lost]}" = 1
check "o-lost: compensated" verify lost 'r["status"] == "compensated"'
check "o-lost: shipping failed as undeliverable, not retried" \
  verify lost 't["ship-order"][0]["status"] == "failed" and t["ship-order"][0]["attempt"] == 1 and t["ship-order"][0]["error"]["type"] == "undeliverable"'
check "o-lost: refunded, then released (reverse order)" \
  verify lost '[x["task"] for x in r["tasks"] if x["kind"] == "compensation"] == ["refund-card", "release-stock"] and all(x["status"] == "completed" for x in r["tasks"] if x["kind"] == "compensation")'
check "o-lost: ship-order failed on the Rust worker" verify lost 'served_right(t["ship-order"][0])'
check "o-lost: refund-card served by the TypeScript worker" verify lost 'served_right(t["refund-card"][0]) and t["refund-card"][0]["output"]["refunded"] == "ch-o-lost"'
check "o-lost: release-stock served by the Python worker" verify lost 'served_right(t["release-stock"][0])'

# ---- shutdown ------------------------------------------------------------------------------
# Each worker drains on SIGTERM and exits 0.
step "stopping the workers"
stopped() { # stopped PID: SIGTERM, then its exit status must be 0 within 15 s
  local pid=$1 rc=0
  kill -TERM "$pid" 2>/dev/null || return 1
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && return 1
  wait "$pid" || rc=$?
  return "$rc"
}
check "the Python worker stops on SIGTERM with status 0" stopped "$PY_PID"
check "the TypeScript worker stops on SIGTERM with status 0" stopped "$TS_PID"
check "the Rust worker stops on SIGTERM with status 0" stopped "$RS_PID"

if ((FAILED)); then
  for log in server python typescript rust; do
    echo "---- $log log (last 40 lines)"
    tail -n 40 "$WORK/$log.log" || true
  done
fi
step "done"
echo "example: $PASSED passed, $FAILED failed"
((FAILED == 0))
