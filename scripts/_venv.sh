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

# The browser tests (tests/dashboard) drive Debian's chromium through chromium-driver. Install
# them when missing and we are root (a fresh CI machine); otherwise say why those tests skip.
ensure_browser() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: chromium/chromedriver not installed and not root: browser tests will skip (fail in CI)" >&2
  fi
}
