# Sourced by the run-*.sh scripts: make sure .venv exists and holds what requirements-dev.txt
# pins, reinstalling only when a requirements file changed since the last install.

cd "$(dirname "${BASH_SOURCE[0]}")"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    local python
    python=$(find_python) || exit 1
    echo "Creating .venv with $("$python" --version)"
    "$python" -m venv .venv
  fi
  local stamp=.venv/.requirements.sha256
  local wanted
  wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "Installing requirements into .venv"
    .venv/bin/python -m pip install --disable-pip-version-check --quiet -r requirements-dev.txt
    echo "$wanted" >"$stamp"
  fi
}
