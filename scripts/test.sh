#!/usr/bin/env bash
# The whole test suite, from a bare machine: installs what is missing (scripts/bootstrap.sh),
# then lints (ruff), type-checks (mypy) and runs pytest. Extra arguments go to pytest,
# e.g. scripts/test.sh -m unit  or  scripts/test.sh tests/integration -k redis
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
scripts/bootstrap.sh
echo "[test] bootstrap took $((SECONDS - start)) s" >&2

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# pytest exits 5 when it collected no test: that is a failure here, as it should be.
.venv/bin/pytest "$@"
echo "[test] total $((SECONDS - start)) s" >&2
