#!/usr/bin/env bash
# Create or refresh the Python virtualenvs the tests and generators use:
#   .venv          requirements-dev.txt (pytest, helm-python-sdk, kubernetes-validate, ...)
#   .venv-checkov  requirements-checkov.txt (checkov pins packaging<24, pytest 9 needs >=24)
# Idempotent: reinstalls a venv only when its requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null; then
  echo "python3 is required (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi

# make_venv DIR REQUIREMENTS
make_venv() {
  local dir=$1 requirements=$2
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
  fi
  local stamp="$dir/.requirements.sha256" want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" > "$stamp"
  fi
}

make_venv .venv requirements-dev.txt
make_venv .venv-checkov requirements-checkov.txt
