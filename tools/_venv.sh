# Sourced by tools/emulator and tools/test: make .venv and install the project into it.
# Re-installs only when pyproject.toml changed (a stamp holds its hash).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
ensure_venv() {
  local extras="$1"  # "" or "[test]"
  if [ ! -x "$venv/bin/python" ]; then
    echo "tools: creating $venv" >&2
    python3 -m venv "$venv" || {
      echo "tools: python3 -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
  fi
  local stamp="$venv/.dpfw-stamp$extras"
  local want; want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
  # The test install includes everything the plain one has.
  if [ -z "$extras" ] && [ "$(cat "$venv/.dpfw-stamp[test]" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "tools: installing dpfw$extras into $venv" >&2
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -e "$root$extras" >&2
    echo "$want" > "$stamp"
  fi
}
