#!/usr/bin/env bash
# sdks/python/test.sh: installs the Python SDK into a cached venv and runs its checks
# (mypy --strict, then pytest against a real `distorch standalone`).
#
#   DISTORCH_BIN=/abs/path/to/target/debug/distorch bash sdks/python/test.sh
#
# Environment:
#   DISTORCH_BIN    the server binary (required; `cargo build -p distorch --offline` makes
#                   target/debug/distorch)
#   DISTORCH_CACHE  cache dir (default ~/.cache/distorch); the venv is
#                   $DISTORCH_CACHE/venv-python-sdk, recreated when the tool requirements
#                   below, pyproject.toml or the Python version change
#   PYTHON          the interpreter to build the venv with (default python3; 3.10+)
#   PYTEST_ARGS     extra pytest arguments (e.g. "-k drain -x")
#
# Exits non-zero on any failure; never skips a check.
set -euo pipefail

SDK_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
DISTORCH_CACHE=${DISTORCH_CACHE:-$HOME/.cache/distorch}
VENV="$DISTORCH_CACHE/venv-python-sdk"
PYTHON=${PYTHON:-python3}

# The tools the checks need, pinned to ranges known to work. The SDK itself has no
# runtime dependencies.
TOOLS=("flit_core>=3.4,<5" "pytest>=7,<10" "mypy>=1.5,<3")

fail() { echo "sdks/python/test.sh: $*" >&2; exit 1; }
step() { echo "==> $*"; }

if [[ -z "${DISTORCH_BIN:-}" ]]; then
  fail "DISTORCH_BIN is not set: point it at the distorch binary (cargo build -p distorch --offline; target/debug/distorch)"
fi
[[ -x "$DISTORCH_BIN" ]] || fail "DISTORCH_BIN=$DISTORCH_BIN is not an executable file"
DISTORCH_BIN=$(cd -- "$(dirname -- "$DISTORCH_BIN")" && pwd)/$(basename -- "$DISTORCH_BIN")
export DISTORCH_BIN

command -v "$PYTHON" >/dev/null || fail "no $PYTHON on PATH (set PYTHON to a Python 3.10+ interpreter)"
"$PYTHON" -c 'import sys' >/dev/null 2>&1 || fail "$PYTHON does not run (set PYTHON to a Python 3.10+ interpreter)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || fail "$("$PYTHON" --version 2>&1) is too old: the SDK needs Python 3.10+"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || fail "$PYTHON cannot create venvs (on Debian: apt-get install python3-venv)"

# Recreate the venv when what it was built from changes.
KEY=$( { "$PYTHON" -c 'import sys; print(sys.version)'; printf '%s\n' "${TOOLS[@]}"; cat "$SDK_DIR/pyproject.toml"; } | sha256sum | cut -c1-16)
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.key" 2>/dev/null)" != "$KEY" ]]; then
  step "creating $VENV"
  rm -rf "$VENV"
  mkdir -p "$DISTORCH_CACHE"
  "$PYTHON" -m venv "$VENV" || fail "could not create the venv at $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOLS[@]}" \
    || { rm -rf "$VENV"; fail "could not install ${TOOLS[*]} from PyPI into $VENV"; }
  echo "$KEY" > "$VENV/.key"
fi

# A real, non-editable install from the source tree, so packaging (metadata, py.typed, the
# module list) is tested too. Built with the venv's flit_core: no network needed here.
step "installing the SDK from $SDK_DIR"
"$VENV/bin/python" -m pip uninstall --quiet --yes distorch >/dev/null 2>&1 || true
BUILD_TMP=$(mktemp -d "${TMPDIR:-/tmp}/distorch-pysdk.XXXXXX")
trap 'rm -rf "$BUILD_TMP"' EXIT
cp -r "$SDK_DIR/pyproject.toml" "$SDK_DIR/README.md" "$SDK_DIR/src" "$BUILD_TMP/"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
  --no-deps "$BUILD_TMP" || fail "pip could not install the SDK from $SDK_DIR"
# The installed copy, not the source tree, must be what the tests import.
INSTALLED=$(cd / && "$VENV/bin/python" -c 'import distorch, os; print(os.path.dirname(distorch.__file__))')
[[ "$INSTALLED" == "$VENV"/* ]] || fail "distorch imports from $INSTALLED, not from the venv"
[[ -f "$INSTALLED/py.typed" ]] || fail "the installed package has no py.typed marker"

step "mypy --strict"
(cd "$SDK_DIR" && "$VENV/bin/python" -m mypy --strict --config-file pyproject.toml \
   --cache-dir "$DISTORCH_CACHE/mypy-python-sdk" src/distorch tests) || fail "mypy found problems"

step "pytest (server: $DISTORCH_BIN)"
cd "$SDK_DIR/tests"
# PYTEST_ARGS is split like a shell command line, so quoted -k expressions work.
eval "EXTRA=(${PYTEST_ARGS:-})"
"$VENV/bin/python" -m pytest -c "$SDK_DIR/pyproject.toml" --rootdir "$SDK_DIR" \
  -p no:cacheprovider "${EXTRA[@]}" "$SDK_DIR/tests" || fail "pytest failed"
