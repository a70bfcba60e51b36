#!/usr/bin/env bash
# The main job: installs what is missing, then runs the local stack in the foreground.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh
exec .venv/bin/botsession up "$@"
