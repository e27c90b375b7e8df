#!/usr/bin/env bash
# Set up and run the lint and the whole test suite; extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/run-setup.sh"
ensure_venv

.venv/bin/python tasks.py lint
exec .venv/bin/python -m pytest "$@"
