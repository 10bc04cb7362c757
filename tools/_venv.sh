# Sourced by tools/emulator and tools/test: make .venv and install the project into it.
# Re-installs only when pyproject.toml changed (a stamp holds its hash).
# dpfw needs Python >= 3.11: `python3` on PATH, or the interpreter named by $DPFW_PYTHON.
# A .venv made by an older Python, or whose Python is gone or was moved, is made again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
need_major=3
need_minor=11

# The X.Y.Z version of interpreter $1, or nothing if it does not run.
python_version() {
  "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || true
}

# True when version $1 (X.Y.Z) is at least need_major.need_minor.
new_enough() {
  local major minor
  IFS=. read -r major minor _ <<<"$1"
  [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || return 1
  (( major > need_major || (major == need_major && minor >= need_minor) ))
}

# Why .venv cannot be used (one line), or nothing when it is fine.
venv_problem() {
  local version shebang
  version="$(python_version "$venv/bin/python")"
  if [ -z "$version" ]; then
    echo "its Python does not run (removed, or the venv was copied from another machine)"
  elif ! new_enough "$version"; then
    echo "it was made by Python $version; dpfw needs Python >= $need_major.$need_minor"
  elif [ -f "$venv/bin/pip" ]; then
    shebang="$(head -n 1 "$venv/bin/pip")"
    shebang="${shebang#\#!}"
    shebang="${shebang%% *}"
    # pip's scripts name the venv's python by full path (unless the path needs quoting, when
    # they start with /bin/sh): another directory there means the venv was moved.
    if [[ "$shebang" == */python* && "$(dirname "$shebang")" != "$venv/bin" ]]; then
      echo "it was made at $(dirname "$(dirname "$shebang")") and moved here"
    fi
  fi
}

make_venv() {
  if [ -d "$venv" ] && [ -z "$(ls -A "$venv")" ]; then
    rmdir "$venv"  # left empty by an interrupted run
  fi
  if [ -e "$venv" ]; then
    local problem; problem="$(venv_problem)"
    [ -z "$problem" ] && return 0
    if [ ! -f "$venv/pyvenv.cfg" ]; then
      echo "tools: $venv is not a Python venv (no pyvenv.cfg) and $problem;" \
        "move it away and run again" >&2
      exit 1
    fi
    echo "tools: $venv cannot be used: $problem; making it again" >&2
    rm -rf "$venv"
  fi
  local python="${DPFW_PYTHON:-python3}" version
  version="$(python_version "$python")"
  if [ -z "$version" ]; then
    echo "tools: dpfw needs Python >= $need_major.$need_minor, and '$python' does not run;" \
      "install Python $need_major.$need_minor or newer (or set DPFW_PYTHON to one)" >&2
    exit 1
  fi
  if ! new_enough "$version"; then
    echo "tools: dpfw needs Python >= $need_major.$need_minor, but '$python' is Python" \
      "$version ($(command -v "$python"));" \
      "install Python $need_major.$need_minor or newer and put it first on PATH as python3," \
      "or set DPFW_PYTHON=/path/to/python3.$need_minor" >&2
    exit 1
  fi
  echo "tools: creating $venv with Python $version ($(command -v "$python"))" >&2
  "$python" -m venv "$venv" || {
    echo "tools: $python -m venv failed; on Debian: apt-get install python3-venv" >&2; exit 1; }
}

ensure_venv() {
  local extras="$1"  # "" or "[test]"
  make_venv
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
