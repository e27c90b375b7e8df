#!/usr/bin/env bash
# The main job: set up and serve the API at http://$HOST:$PORT (default 127.0.0.1:8000), with
# reload. Migrates the development database and seeds it when it is empty.
set -euo pipefail
source "$(dirname "$0")/run-setup.sh"
ensure_venv

.venv/bin/python tasks.py db:dev:upgrade
.venv/bin/python tasks.py db:dev:seed --if-empty

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
echo "Serving on http://$HOST:$PORT (API docs at http://$HOST:$PORT/docs)"
exec .venv/bin/python -m uvicorn app.main:app --reload --reload-dir app --reload-dir config \
  --no-access-log \
  --host "$HOST" --port "$PORT"
