#!/usr/bin/env bash
# Builds and tests the TypeScript SDK (@distorch/sdk) against a real distorch server.
#
#   DISTORCH_BIN=/abs/path/to/target/debug/distorch bash sdks/typescript/test.sh
#
# Env: DISTORCH_BIN (required: the server binary the tests start), DISTORCH_CACHE (cache
# dir, default ~/.cache/distorch; npm's cache goes to $DISTORCH_CACHE/npm).
# Steps: npm ci, tsc (type-check + build to dist/), npm pack (the tarball must hold
# dist/*.js and dist/*.d.ts, install into a fresh project and type-check there), then
# node --test against the built output. Any failure exits non-zero; nothing is skipped.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

die() {
  echo "sdks/typescript/test.sh: FAILED: $*" >&2
  exit 1
}
step() { echo "== sdks/typescript: $*"; }

# ---- prerequisites ---------------------------------------------------------------------
[[ -n "${DISTORCH_BIN:-}" ]] || die "DISTORCH_BIN is not set: give the absolute path of the distorch binary (cargo build -p distorch --offline; target/debug/distorch)"
if [[ "$DISTORCH_BIN" != /* ]]; then
  DISTORCH_BIN="$(cd "$(dirname "$DISTORCH_BIN")" && pwd)/$(basename "$DISTORCH_BIN")"
fi
[[ -f "$DISTORCH_BIN" && -x "$DISTORCH_BIN" ]] || die "DISTORCH_BIN=$DISTORCH_BIN is not an executable file"
export DISTORCH_BIN

command -v node >/dev/null 2>&1 || die "node is not installed: Node.js 18 or later is required"
command -v npm >/dev/null 2>&1 || die "npm is not installed: it comes with Node.js"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
(( node_major >= 18 )) || die "Node.js 18 or later is required, found $(node --version)"

cache="${DISTORCH_CACHE:-$HOME/.cache/distorch}"
export npm_config_cache="$cache/npm"
export npm_config_update_notifier=false
export npm_config_fund=false
export npm_config_audit=false
mkdir -p "$npm_config_cache" || die "cannot create npm cache dir $npm_config_cache"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# ---- install ---------------------------------------------------------------------------
step "npm ci (node $(node --version), npm $(npm --version), cache $npm_config_cache)"
npm ci --prefer-offline --no-audit --no-fund >"$work/npm-ci.log" 2>&1 || {
  cat "$work/npm-ci.log" >&2
  die "npm ci could not install the dev dependencies (typescript, @types/node) from package-lock.json: is the npm registry reachable, or is $npm_config_cache populated?"
}

# ---- type-check and build ----------------------------------------------------------------
step "tsc: type-check and build dist/"
rm -rf dist
./node_modules/.bin/tsc -p tsconfig.json || die "tsc reported errors"
[[ -f dist/index.js && -f dist/index.d.ts ]] || die "tsc did not produce dist/index.js and dist/index.d.ts"

# ---- package ---------------------------------------------------------------------------
step "npm pack"
# dist/ is fresh, so skip the prepack rebuild.
npm pack --ignore-scripts --pack-destination "$work" >"$work/pack.log" 2>&1 || {
  cat "$work/pack.log" >&2
  die "npm pack failed"
}
tarball="$(ls "$work"/*.tgz 2>/dev/null | head -n1)"
[[ -n "$tarball" ]] || die "npm pack produced no tarball"
tar -tzf "$tarball" | sed 's#^package/##' | sort >"$work/contents"
for f in dist/index.js dist/index.d.ts dist/worker.js dist/worker.d.ts dist/client.js dist/client.d.ts package.json README.md; do
  grep -qx "$f" "$work/contents" || die "the tarball lacks $f; it holds: $(tr '\n' ' ' <"$work/contents")"
done
for js in dist/*.js; do
  grep -qx "$js" "$work/contents" || die "the tarball lacks $js"
  grep -qx "${js%.js}.d.ts" "$work/contents" || die "the tarball lacks ${js%.js}.d.ts"
done
if grep -qE '^(src|test|node_modules)/' "$work/contents"; then
  die "the tarball ships sources, tests or node_modules: $(grep -E '^(src|test|node_modules)/' "$work/contents" | tr '\n' ' ')"
fi
echo "$(basename "$tarball"): $(wc -l <"$work/contents") files"

# The tarball installs into a fresh project (offline: it has no dependencies), imports,
# and type-checks against its declarations.
mkdir -p "$work/consumer"
(
  cd "$work/consumer"
  echo '{"name":"consumer","version":"1.0.0","private":true,"type":"module"}' >package.json
  npm install --offline --no-audit --no-fund "$tarball" >"$work/consumer-install.log" 2>&1
) || {
  cat "$work/consumer-install.log" >&2
  die "the packed tarball does not install"
}
cat >"$work/consumer/check.ts" <<'TS'
import { Client, TaskError, Worker, type TaskContext } from "@distorch/sdk";
const worker = new Worker({ url: "http://127.0.0.1:1", queue: "payments", concurrency: 2, handleSignals: false });
worker.task("charge-card", async (ctx: TaskContext<{ amount: number }>, input) => {
  ctx.heartbeat({ progress: 0.5 });
  if (input.amount > 1000) throw new TaskError("limit_exceeded", "too large", { retryable: false });
  const cancelled: boolean = ctx.cancelled;
  const signal: AbortSignal = ctx.signal;
  return { charged: input.amount, cancelled, aborted: signal.aborted };
});
const client = new Client("http://127.0.0.1:1");
export const started: Promise<{ workflowId: string; existing: boolean }> = client.start("d", {}, { workflowId: "x" });
TS
cat >"$work/consumer/tsconfig.json" <<'JSON'
{ "compilerOptions": { "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext", "strict": true, "noEmit": true, "types": [], "lib": ["ES2022", "DOM"] }, "files": ["check.ts"] }
JSON
(cd "$work/consumer" && "$here/node_modules/.bin/tsc" -p tsconfig.json) || die "a TypeScript consumer does not type-check against the packed declarations"
(cd "$work/consumer" && node --input-type=module -e '
  const m = await import("@distorch/sdk");
  for (const name of ["Worker", "Client", "TaskError", "ApiError", "TaskContext", "consoleLogger"]) {
    if (typeof m[name] !== "function") throw new Error(`the package does not export ${name}`);
  }
') || die "the packed package does not import"

# ---- tests -----------------------------------------------------------------------------
step "node --test against dist/ (server: $DISTORCH_BIN)"
# Spec output for people, TAP to a file for the counts of the closing line.
flags=(--test --test-reporter=spec --test-reporter-destination=stdout --test-reporter=tap --test-reporter-destination="$work/tap.txt")
if node --help 2>/dev/null | grep -q -- '--test-concurrency'; then
  flags+=(--test-concurrency=2)
fi
if node --help 2>/dev/null | grep -q -- '--test-timeout'; then
  flags+=(--test-timeout=120000)
fi
status=0
node "${flags[@]}" test/*.test.mjs || status=$?
passed="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$work/tap.txt" | tail -n1)"
failed="$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$work/tap.txt" | tail -n1)"
cancelled="$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$work/tap.txt" | tail -n1)"
failed=$(( ${failed:-0} + ${cancelled:-0} ))
(( status == 0 )) || die "tests failed (see above): ${passed:-0} passed, $failed failed"
[[ -n "$passed" && "$passed" -gt 0 ]] || die "node --test ran no test"
(( failed == 0 )) || die "${passed} passed, $failed failed"
step "all passed"
echo "sdks/typescript: ${passed} passed, ${failed} failed"
