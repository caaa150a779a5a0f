# Sourced by scripts/demo and scripts/test: make ./.venv and install the adapter into it.
# Usage: ensure_venv [pip extras, e.g. "[test]"]
ensure_venv() {
  local python="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
  .venv/bin/python -m pip install --quiet -e ".${1:-}"
}
