#!/usr/bin/env bash
# Start a local PostgreSQL and print its URL: Docker Compose's where a Docker engine runs, else
# the embedded server the app uses by default (data under .data/).
set -euo pipefail
source "$(dirname "$0")/run-setup.sh"

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  docker compose up --detach --wait db
  echo "postgresql://tracker:tracker@127.0.0.1:5432/tracker"
  echo "(use it with: export DATABASE_URL=postgresql://tracker:tracker@127.0.0.1:5432/tracker)"
else
  ensure_venv
  .venv/bin/python -c '
from config.embedded import embedded_database_url
from config.settings import LocalSettings

settings = LocalSettings()
url = embedded_database_url(settings.embedded_data_dir, settings.embedded_database_name)
print(url.render_as_string(hide_password=False))
'
fi
