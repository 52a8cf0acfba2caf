#!/usr/bin/env bash
# `sam` (aws-sam-cli) from a venv of its own: scripts/sam.sh validate --lint, scripts/sam.sh build, ...
#
# Why its own venv: aws-sam-cli pins boto3, click and cfn-lint to exact versions other than the project's,
# so installed beside them it would downgrade what the tests run on. The venv is made once per machine and
# version (~/.cache/stillhouse/sam-VERSION, or under STILLHOUSE_TOOLS; ~2 min) and reused by every checkout. It runs on Python 3.12, which `sam build` needs anyway: the template's
# functions and layer are built for the python3.12 runtime, with this interpreter first on PATH.
# Telemetry is off; `sam build` reaches only the package registry (the layer's requirements).
#
# Environment: STILLHOUSE_TOOLS (default ~/.cache/stillhouse), SAM_PYTHON (a Python 3.12; default: found on
# PATH or in pyenv). `scripts/sam.sh --python` prints the Python 3.12 it uses (or fails saying why).
set -euo pipefail

VERSION="1.170.0"
HOME_DIR="${STILLHOUSE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/stillhouse}/sam-$VERSION"
VENV="$HOME_DIR/venv"

die() { echo "sam.sh: $*" >&2; exit 1; }

find_python() {
  if [[ -n "${SAM_PYTHON:-}" ]]; then echo "$SAM_PYTHON"; return; fi
  local candidate
  for candidate in "$(command -v python3.12 2>/dev/null || true)" "$HOME"/.pyenv/versions/3.12*/bin/python3; do
    if [[ -x "$candidate" ]] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      # the real interpreter, not a pyenv shim that another directory's .python-version may redirect
      "$candidate" -c 'import sys; print(sys.executable)'; return
    fi
  done
  die "no Python 3.12 (the Lambda runtime the template builds for): set SAM_PYTHON or install one (pyenv install 3.12)"
}

PYTHON="$(find_python)"
if [[ "${1:-}" == "--python" ]]; then echo "$PYTHON"; exit 0; fi

mkdir -p "$HOME_DIR"
exec 9>"$HOME_DIR.lock"
flock 9  # two checkouts installing at once take turns
if [[ ! -f "$VENV/.installed-$VERSION" ]]; then
  echo "sam.sh: installing aws-sam-cli $VERSION into $VENV ($PYTHON)" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "aws-sam-cli==$VERSION" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)  # this machine's pip config lists absent local indexes
  touch "$VENV/.installed-$VERSION"
fi
flock -u 9
exec 9>&-

export SAM_CLI_TELEMETRY=0
export PATH="$(dirname "$PYTHON"):$PATH"
exec "$VENV/bin/sam" "$@"
