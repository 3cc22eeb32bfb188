#!/usr/bin/env bash
# Runs every test of flowdaq on a fresh machine: installs what the tests need (a Python
# virtualenv with pyzmq, numpy, pyarrow, duckdb, pytest, ADBC, psycopg and the numerical reference
# packages, Playwright, Debian's psql and Debian's headless Chromium),
# builds the workspace, runs the Rust tests, then the interop tests in which clients we did not
# write (pyzmq, pyarrow, duckdb) talk to a real flowdaq server. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flowdaq-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
VENV="${FLOWDAQ_VENV:-$HOME/.cache/flowdaq-venv}"
export FLOWDAQ_PYTHON="$VENV/bin/python"   # numerical reference tests call it

echo "== python virtualenv ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
# The project's own Python client, as users install it (the tests and examples import it).
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check ./python

echo "== psql (Debian's postgresql-client, a PostgreSQL client the interop tests drive)"
if ! command -v psql >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql-client >/dev/null
fi
psql --version

echo "== chromium (Debian's package, the browser the dashboard tests drive through Playwright)"
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version

echo "== cargo build"
cargo build --workspace --all-targets --locked

echo "== cargo test"
cargo test --workspace --locked

echo "== interop tests (pyzmq, pyarrow, duckdb against a real server)"
export FLOWDAQ_BIN="$CARGO_TARGET_DIR/debug/flowdaq"
# Screenshots the browser tests take.
export FLOWDAQ_ARTIFACTS="${FLOWDAQ_ARTIFACTS:-$CARGO_TARGET_DIR/test-artifacts}"
"$VENV/bin/python" -m pytest tests/python -q -p no:cacheprovider
