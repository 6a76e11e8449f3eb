#!/usr/bin/env bash
# scripts/test.sh: the one command that installs what DisTorch's tests need and runs them all.
#
#   bash scripts/test.sh            # from any directory
#
# Needs only rustup's cargo (the toolchain named in Cargo.toml, with rustfmt and clippy) on a
# Debian machine; everything else is installed here, into a cache that later runs reuse.
# CI runs it through .ci/run with CI=true on a fresh clone.
#
# Phases, in order (each is timed; the summary at the end lists them):
#   provision   tools the tests need (PyYAML, Node.js, ClickHouse from chdb-core, tansu as the
#               Kafka broker)
#   services    servers the tests need (ClickHouse, tansu), stopped again on exit
#   fetch       crates from crates.io, so network time is not counted as compile time
#   fmt         cargo fmt --check
#   deploy      static checks of infra/ and docker-compose.yml (scripts/check_deploy_files.py)
#   clippy      -D warnings on every target
#   doc         cargo doc of the workspace (private items too) with -D warnings: no stale links
#   build       every target, so end-to-end tests find the `distorch` binary
#   test        cargo nextest (or cargo test when nextest is missing), --no-fail-fast
#   doctest     cargo test --doc (nextest does not run doctests)
#   sdk-python  the Python SDK's mypy --strict and pytest against the built binary
#   sdk-ts      the TypeScript SDK's build, package check and node --test against it
#   example     examples/order-saga/run.sh: one saga served by a Python, a TypeScript and a
#               Rust worker, driven and checked with the CLI
#
# Environment:
#   DISTORCH_CACHE      where installed tools live (default ~/.cache/distorch)
#   DISTORCH_FAIL_FAST  1 = stop at the first failing phase (default: run every check and
#                       report them all; tests are still skipped when the build fails)
#   DISTORCH_SKIP       check phases to leave out while iterating, e.g. "clippy doctest"
#                       (skipping build skips the tests too); never set on CI
#   CI                  true on CI: no incremental compilation, plain output
set -euo pipefail

REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

DISTORCH_CACHE=${DISTORCH_CACHE:-$HOME/.cache/distorch}
export DISTORCH_CACHE
mkdir -p "$DISTORCH_CACHE/bin"
# Tools installed with `cargo install --root "$DISTORCH_CACHE"` land in $DISTORCH_CACHE/bin.
export PATH="$DISTORCH_CACHE/bin:$HOME/.cargo/bin:$PATH"

FAIL_FAST=${DISTORCH_FAIL_FAST:-0}
SKIP=" ${DISTORCH_SKIP:-} "
LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/distorch-test.XXXXXX")

export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
export CARGO_NET_RETRY=${CARGO_NET_RETRY:-5}
if [[ "${CI:-}" == "true" ]]; then
  # A fresh clone has no incremental state worth keeping; skipping it saves time and disk.
  export CARGO_INCREMENTAL=0
fi
# nextest's colour decision sees a pipe (we tee its output), so decide from our own stdout.
if [[ -t 1 ]]; then COLOR=always; else COLOR=never; fi

# ---------------------------------------------------------------------------------------------
# Output and phase bookkeeping
# ---------------------------------------------------------------------------------------------

SCRIPT_START=$SECONDS
SUMMARY=()          # one line per finished phase
FAILED_PHASES=()
CURRENT_PHASE=""    # set while a phase runs, so the exit trap can report an aborted one
PHASE_START=0

log()  { printf '[test.sh] %s\n' "$*"; }
die()  { printf '[test.sh] ERROR: %s\n' "$*" >&2; exit 1; }
dur()  { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

begin_phase() {
  CURRENT_PHASE=$1
  PHASE_START=$SECONDS
  printf '\n==== %s ====\n' "$1"
}

# end_phase STATUS: record the current phase as ok / FAILED / skipped.
end_phase() {
  local status=$1 took=$((SECONDS - PHASE_START))
  SUMMARY+=("$(printf '  %-10s %-8s %s' "$CURRENT_PHASE" "$status" "$(dur "$took")")")
  [[ "$status" == "FAILED" ]] && FAILED_PHASES+=("$CURRENT_PHASE")
  printf -- '---- %s: %s in %s\n' "$CURRENT_PHASE" "$status" "$(dur "$took")"
  CURRENT_PHASE=""
}

skip_phase() {
  SUMMARY+=("$(printf '  %-10s %-8s (%s)' "$1" "skipped" "$2")")
  printf '\n==== %s: skipped (%s) ====\n' "$1" "$2"
}

# check NAME CMD...: run one check phase and leave its exit status in CHECK_RC. The command
# runs in a subshell with `set -e` in force. (check must not be called from `if`, `&&` or `||`:
# bash would then switch -e off for everything inside it, subshells included.) A failure is
# recorded and, unless DISTORCH_FAIL_FAST=1, the remaining checks still run.
CHECK_RC=0
check() {
  local name=$1
  shift
  if [[ "$SKIP" == *" $name "* ]]; then
    skip_phase "$name" "DISTORCH_SKIP"
    CHECK_RC=skipped
    return 0
  fi
  begin_phase "$name"
  set +e
  (set -e; "$@")
  CHECK_RC=$?
  set -e
  if [[ "$CHECK_RC" == 0 ]]; then
    end_phase ok
  else
    end_phase FAILED
    if [[ "$FAIL_FAST" == "1" ]]; then exit "$CHECK_RC"; fi
    CHECK_RC=failed
  fi
}

# Test counts gathered from the runners' own summary lines, for the closing line.
PASSED=0 FAILED=0 SKIPPED=0 COUNTED=0

strip_ansi() { sed -e 's/\x1b\[[0-9;]*m//g' "$@"; }

# count_nextest LOG: "Summary [ 1.2s] 40 tests run: 38 passed, 2 failed, 3 skipped".
count_nextest() {
  local line n kind
  [[ -f "$1" ]] || return 0
  line=$(strip_ansi "$1" | grep -E '^ *Summary \[' | tail -n 1) || return 0
  for kind in passed failed skipped 'timed out'; do
    n=$(grep -oE "[0-9]+ $kind" <<<"$line" | grep -oE '^[0-9]+') || n=0
    case $kind in
      passed) PASSED=$((PASSED + n)) ;;
      skipped) SKIPPED=$((SKIPPED + n)) ;;
      *) FAILED=$((FAILED + n)) ;;
    esac
  done
  COUNTED=1
}

# count_libtest LOG: every "test result: ok. 3 passed; 0 failed; 1 ignored; ..." line.
count_libtest() {
  local p f i
  [[ -f "$1" ]] || return 0
  while read -r p f i; do
    PASSED=$((PASSED + p)) FAILED=$((FAILED + f)) SKIPPED=$((SKIPPED + i))
    COUNTED=1
  done < <(strip_ansi "$1" |
    sed -nE 's/^test result: [A-Za-z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p')
}

# count_plain LOG: "deploy-files: 12 passed, 0 failed".
count_plain() {
  local line p f
  [[ -f "$1" ]] || return 0
  line=$(grep -E '^[a-z/-]+: [0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1) || return 0
  p=$(sed -E 's/^[a-z/-]+: ([0-9]+) passed.*/\1/' <<<"$line")
  f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
  PASSED=$((PASSED + p)) FAILED=$((FAILED + f))
}

# count_pytest LOG: pytest's closing "==== 21 passed, 1 failed in 17.20s ====".
count_pytest() {
  local line n kind
  [[ -f "$1" ]] || return 0
  line=$(grep -E '^=+ .*[0-9]+ (passed|failed).* in [0-9.]+s' "$1" | tail -n 1) || return 0
  for kind in passed failed error skipped; do
    n=$(grep -oE "[0-9]+ $kind" <<<"$line" | grep -oE '^[0-9]+') || n=0
    case $kind in
      passed) PASSED=$((PASSED + n)) ;;
      skipped) SKIPPED=$((SKIPPED + n)) ;;
      *) FAILED=$((FAILED + n)) ;;
    esac
  done
}

on_exit() {
  local rc=$?
  # A phase still open here was cut short by a failing command under `set -e`.
  if [[ -n "$CURRENT_PHASE" ]]; then end_phase FAILED; fi
  stop_services || true
  printf '\n==== summary ====\n'
  printf '  %-10s %-8s %s\n' phase status time
  printf '%s\n' "${SUMMARY[@]}"
  printf '  %-10s %-8s %s\n' total "" "$(dur $((SECONDS - SCRIPT_START)))"
  if ((rc == 0 && ${#FAILED_PHASES[@]} == 0)); then
    printf 'result: PASSED\n'
  else
    printf 'result: FAILED (%s)\n' "${FAILED_PHASES[*]:-exit status $rc}"
    ((rc != 0)) || rc=1
  fi
  if ((COUNTED)); then
    # The closing line: every test the runners executed, plus the deploy-file checks.
    printf 'tests: %d passed, %d failed, %d skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
  else
    printf 'tests: the test runner did not run to its summary\n'
  fi
  rm -rf "$LOG_DIR"
  exit "$rc"
}
trap on_exit EXIT
# Ctrl-C or a kill ends the whole run (on_exit still reports), not just the running phase.
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Provisioning: each function installs one thing if it is missing, into $DISTORCH_CACHE where
# it can, and is quick when everything is already there.
# ---------------------------------------------------------------------------------------------

# apt_install PKG...: Debian packages, as root or through sudo.
apt_install() {
  command -v apt-get >/dev/null || die "need Debian packages ($*) but apt-get is missing"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  log "apt-get install $*"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@"
}

# Debian packages the build or the tests need: rdkafka builds its bundled librdkafka with
# ./configure and make (no cmake), and OpenSSL from source with perl and make, using the C
# compiler Rust already needs; curl asks the test ClickHouse whether it is up; the openssl CLI
# makes the Kafka TLS test's certificate.
APT_PACKAGES=(make perl curl openssl)
provision_apt() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
}

# Node.js 18+ and npm for the TypeScript SDK's tests (Debian's nodejs when none is installed).
provision_node() {
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
    die "the TypeScript SDK needs Node.js 18+, found $(node --version)"
}

# The Rust toolchain comes from rustup (the machine's one toolchain); we only check for it and
# its rustfmt/clippy components, and pick the test runner.
provision_rust() {
  command -v cargo >/dev/null || die "cargo not found: install Rust with rustup first"
  local comp
  for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
      command -v rustup >/dev/null || die "cargo $comp is missing and rustup is not available"
      log "rustup component add $comp"
      rustup component add "$comp"
    fi
  done
  if cargo nextest --version >/dev/null 2>&1; then
    TEST_RUNNER=nextest
  else
    TEST_RUNNER=cargo-test
    log "cargo-nextest not found: running the tests with cargo test"
  fi
}

# PyYAML for scripts/check_deploy_files.py. Installed with pip into a cache folder on
# PYTHONPATH (keyed by Python version), so the user's own Python environment is left alone.
provision_python() {
  command -v python3 >/dev/null || apt_install python3 python3-yaml
  local pyver pydir
  pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  pydir="$DISTORCH_CACHE/python$pyver"
  export PYTHONPATH="$pydir${PYTHONPATH:+:$PYTHONPATH}"
  if python3 -c 'import yaml' 2>/dev/null; then return 0; fi
  log "installing PyYAML into $pydir"
  python3 -m pip install --quiet --disable-pip-version-check --target "$pydir" pyyaml ||
    apt_install python3-yaml
  python3 -c 'import yaml' || die "PyYAML could not be installed for $(command -v python3)"
}

# provision_kafka: tansu (Apache-2.0), a Kafka-compatible broker, for the Kafka tests (the
# TLS test starts one of its own behind a TLS proxy, so it is installed even when
# DISTORCH_TEST_KAFKA names another broker). Its default features have no SQLite (libsql)
# storage, hence the features. A cold build takes 20-30 minutes on 2 cores, so it is installed
# once into the cache and reused.
TANSU_VERSION=0.6.0
TANSU="$DISTORCH_CACHE/bin/tansu"
export DISTORCH_TEST_TANSU="$TANSU"
provision_kafka() {
  if "$TANSU" --version 2>/dev/null | grep -qF "$TANSU_VERSION"; then return 0; fi
  log "installing tansu $TANSU_VERSION into $DISTORCH_CACHE (a 20-30 minute build, once)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
    --root "$DISTORCH_CACHE"
}

# start_kafka: the broker of the Kafka tests. A DISTORCH_TEST_KAFKA (host:port or kafka:// URL)
# that answers is used as it is; otherwise tansu runs on a free loopback port,
# DISTORCH_TEST_KAFKA=127.0.0.1:PORT is exported, and stop_services stops it on exit.
# Storage is tansu's SQLite engine in the run's temp dir (its path is relative to the working
# directory): the memory:// engine answers ListOffsets with the last batch's base offset + 1 and
# fetches from inside a batch skip to the next one, which breaks offsets of batched appends.
start_kafka() {
  local port i dir="$LOG_DIR/tansu"
  if [[ -n "${DISTORCH_TEST_KAFKA:-}" ]]; then
    if port_answers "$DISTORCH_TEST_KAFKA"; then
      log "Kafka: the broker named by DISTORCH_TEST_KAFKA=$DISTORCH_TEST_KAFKA"
      return 0
    fi
    log "Kafka: DISTORCH_TEST_KAFKA=$DISTORCH_TEST_KAFKA does not answer; starting tansu instead"
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$dir"
  (cd "$dir" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine sqlite://tansu.db) >"$LOG_DIR/tansu.log" 2>&1 &
  SERVICE_PIDS+=($!)
  for i in $(seq 120); do
    if port_answers "127.0.0.1:$port"; then
      export DISTORCH_TEST_KAFKA="127.0.0.1:$port"
      log "Kafka: $("$TANSU" --version) on $DISTORCH_TEST_KAFKA"
      return 0
    fi
    kill -0 "${SERVICE_PIDS[-1]}" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 40 "$LOG_DIR/tansu.log" >&2 || true
  die "tansu did not accept connections on 127.0.0.1:$port within 60 s (log above)"
}

# port_answers ADDRESS: whether the first host:port of ADDRESS (host:port[,...] or a kafka://
# URL) accepts a TCP connection within 2 s.
port_answers() {
  local address=${1#kafka://}
  address=${address%%[,/?]*}
  local host=${address%:*} port=${address##*:}
  host=${host#[}
  host=${host%]}
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# provision_clickhouse: ClickHouse 26.9 for the analytics store's conformance suite. The
# chdb-core wheel embeds the real server (HTTP and native listeners); it goes into its own venv
# in the cache (about 180 MB, installed once), so the user's Python environment is left alone.
CHDB_VERSION=26.9.*
CHDB_VENV="$DISTORCH_CACHE/chdb"
provision_clickhouse() {
  if "$CHDB_VENV/bin/python" -c 'import chdb._chdb' 2>/dev/null; then return 0; fi
  log "installing chdb-core $CHDB_VERSION into $CHDB_VENV"
  python3 -m venv "$CHDB_VENV" || {
    apt_install python3-venv
    python3 -m venv "$CHDB_VENV"
  }
  "$CHDB_VENV/bin/pip" install --quiet --disable-pip-version-check "chdb-core==$CHDB_VERSION"
  "$CHDB_VENV/bin/python" -c 'import chdb._chdb' || die "chdb-core could not be installed"
}

# start_clickhouse: runs scripts/clickhouse_server.py (config, ports and data under LOG_DIR)
# and waits, bounded, until it answers /ping; exports DISTORCH_TEST_CLICKHOUSE for the
# analytics conformance suite. stop_services stops it on exit.
start_clickhouse() {
  local dir port="" i
  # Under LOG_DIR, which on_exit removes after stopping the server.
  dir="$LOG_DIR/clickhouse"
  mkdir -p "$dir"
  "$CHDB_VENV/bin/python" scripts/clickhouse_server.py "$dir" >"$LOG_DIR/clickhouse.log" 2>&1 &
  SERVICE_PIDS+=($!)
  for i in $(seq 120); do
    [[ -z "$port" && -s "$dir/http_port" ]] && port=$(<"$dir/http_port")
    if [[ -n "$port" ]] && curl -fsS -m 2 "http://127.0.0.1:$port/ping" >/dev/null 2>&1; then
      export DISTORCH_TEST_CLICKHOUSE="http://127.0.0.1:$port"
      log "ClickHouse $(curl -fsS -m 5 "$DISTORCH_TEST_CLICKHOUSE/?query=SELECT%20version()%20FORMAT%20TSVRaw") on $DISTORCH_TEST_CLICKHOUSE"
      return 0
    fi
    kill -0 "${SERVICE_PIDS[-1]}" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 40 "$LOG_DIR/clickhouse.log" >&2 || true
  die "ClickHouse did not answer /ping within 60 s (log above)"
}

# start_services / stop_services: start what provision_* installed on loopback ports, export
# where the tests find it, and stop it on exit. Each server has its own start_* function
# (start_clickhouse, start_kafka) that records its pid in SERVICE_PIDS.
SERVICE_PIDS=()
start_services() { :; }
stop_services() {
  local pid
  for pid in "${SERVICE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVICE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  SERVICE_PIDS=()
}

# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

run_deploy_checks() {
  python3 scripts/check_deploy_files.py | tee "$LOG_DIR/deploy.log"
}

# Links to private items are allowed: the docs are for maintainers and document them too,
# and the conformance suites (feature test-util) with them.
run_docs() {
  RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" \
    cargo doc --workspace --no-deps --locked --document-private-items \
    --features distorch-eventlog/test-util,distorch-store/test-util
}

# The SDKs' own suites, against the binary the build phase made. Each installs what it needs
# into $DISTORCH_CACHE (a venv; npm's cache) and fails, never skips, when it cannot.
run_sdk() {
  DISTORCH_BIN="$REPO_ROOT/target/debug/distorch" bash "sdks/$1/test.sh" 2>&1 |
    tee "$LOG_DIR/sdk-$1.log"
}

# The three-language example; its Rust worker (a package outside the workspace) builds into
# target/ too, reusing what the build phase compiled.
run_example() {
  DISTORCH_BIN="$REPO_ROOT/target/debug/distorch" bash examples/order-saga/run.sh 2>&1 |
    tee "$LOG_DIR/example.log"
}

run_tests() {
  if [[ "$TEST_RUNNER" == nextest ]]; then
    # One retry: a test that passes only on its retry is reported as FLAKY in the output
    # (and must be fixed), but does not fail the run. Known: the projector's restart test
    # failed twice in ~15 full runs on a loaded machine.
    cargo nextest run --workspace --locked --no-fail-fast --color "$COLOR" --retries 1 \
      --config-file scripts/nextest.toml --failure-output immediate-final 2>&1 |
      tee "$LOG_DIR/tests.log"
  else
    # cargo test runs the doctests too.
    cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$LOG_DIR/tests.log"
  fi
}

run_doctests() {
  cargo test --workspace --locked --doc --no-fail-fast 2>&1 | tee "$LOG_DIR/doctests.log"
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

printf '==== machine ====\n'
printf 'repo:    %s (%s)\n' "$REPO_ROOT" "$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git')"
# shellcheck source=/dev/null
printf 'os:      %s, %s\n' "$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}")" "$(uname -srm)"
printf 'cores:   %s\n' "$(nproc)"
if command -v free >/dev/null; then free -h | sed 's/^/         /'; else grep -E '^Mem(Total|Available)' /proc/meminfo; fi
printf 'disk:    %s free under %s\n' "$(df -h --output=avail . | tail -n 1 | tr -d ' ')" "$REPO_ROOT"
# A cold run (clippy, doc, build and tests of the workspace) fills about 27 GiB under target/.
avail_kib=$(df -k --output=avail . | tail -n 1 | tr -d ' ')
if [[ "$avail_kib" =~ ^[0-9]+$ ]] && ((avail_kib < 30 * 1024 * 1024)); then
  printf 'WARNING: under 30 GiB free; a cold run needs about 27 GiB (old target/ dirs or clones?)\n'
fi
printf 'cargo:   %s\n' "$(cargo --version 2>/dev/null || echo 'not found')"
printf 'rustc:   %s\n' "$(rustc --version 2>/dev/null || echo 'not found')"
printf 'python:  %s\n' "$(python3 --version 2>/dev/null || echo 'not found')"
printf 'cache:   %s\n' "$DISTORCH_CACHE"
printf 'ci:      %s\n' "${CI:-false}"

begin_phase provision
provision_apt
provision_rust
provision_python
provision_node
provision_kafka
provision_clickhouse
if [[ "$TEST_RUNNER" == nextest ]]; then
  log "test runner: $(cargo nextest --version | head -n 1)"
else
  log "test runner: cargo test"
fi
end_phase ok

begin_phase services
start_services
start_clickhouse
start_kafka
end_phase ok

begin_phase fetch
cargo fetch --locked
end_phase ok

check fmt cargo fmt --all -- --check
check deploy run_deploy_checks
count_plain "$LOG_DIR/deploy.log"
check clippy cargo clippy --workspace --all-targets --locked -- -D warnings
check doc run_docs
check build cargo build --workspace --all-targets --locked
if [[ "$CHECK_RC" == 0 ]]; then
  check test run_tests
  if [[ "$TEST_RUNNER" == nextest ]]; then
    count_nextest "$LOG_DIR/tests.log"
    check doctest run_doctests
    count_libtest "$LOG_DIR/doctests.log"
  else
    count_libtest "$LOG_DIR/tests.log"
  fi
  check sdk-python run_sdk python
  count_pytest "$LOG_DIR/sdk-python.log"
  check sdk-ts run_sdk typescript
  count_plain "$LOG_DIR/sdk-typescript.log"
  check example run_example
  count_plain "$LOG_DIR/example.log"
else
  skip_phase test "build $CHECK_RC"
  skip_phase sdk-python "build $CHECK_RC"
  skip_phase sdk-ts "build $CHECK_RC"
  skip_phase example "build $CHECK_RC"
fi
# on_exit prints the summary and sets the exit status from the recorded phases.
