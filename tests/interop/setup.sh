#!/usr/bin/env bash
# tests/interop/setup.sh: install the independent NSQ client libraries used by the
# interop checks, from the package registries only (PyPI, npm), into the build tree:
#
#   $REPO/target/interop/venv   Python venv with pynsq (+ its tornado dependency)
#   $REPO/target/interop/node   npm prefix with nsqjs (node_modules/nsqjs)
#
# Idempotent: each part writes a stamp file holding its pinned versions and is
# skipped when the stamp matches and the package still imports. Concurrent runs
# are serialised with flock. Exits non-zero with a message on any failure.
#
# Env overrides: PYTHON (default: python3, else python3.11), NPM (default: npm),
#                INTEROP_DIR (default: $REPO/target/interop).
set -euo pipefail

# Pinned versions. pynsq 0.9.1 (latest, 2021) declares an unpinned `tornado`
# dependency; upstream CI tested tornado 4.5.3 / 5.1.1 / 6.0.4 and 0.9.0 added
# tornado 6.x support. tornado 6.4.2 ships an abi3 wheel that works on Python 3.11.
PYNSQ_VERSION=0.9.1
TORNADO_VERSION=6.4.2
NSQJS_VERSION=0.13.0

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DIR=${INTEROP_DIR:-$REPO/target/interop}
VENV=$DIR/venv
NODE_PREFIX=$DIR/node

log() { echo "interop-setup: $*"; }
die() { echo "interop-setup: ERROR: $*" >&2; exit 1; }

mkdir -p "$DIR" || die "cannot create $DIR"

command -v flock >/dev/null || die "flock not found (Debian package util-linux)"
exec 9>"$DIR/.setup.lock"
if ! flock -n 9; then
  log "another setup.sh holds $DIR/.setup.lock; waiting (up to 900 s)..."
  flock -w 900 9 || die "timed out waiting for $DIR/.setup.lock"
fi

# ---------------------------------------------------------------- Python / pynsq
py_stamp_want="pynsq==$PYNSQ_VERSION tornado==$TORNADO_VERSION"
py_stamp=$VENV/.interop-stamp
py_ok() {
  [ -x "$VENV/bin/python" ] && [ "$(cat "$py_stamp" 2>/dev/null)" = "$py_stamp_want" ] &&
    "$VENV/bin/python" -c 'import nsq, tornado' >/dev/null 2>&1
}
if py_ok; then
  log "python: $py_stamp_want already installed in $VENV (skipping)"
else
  PY=${PYTHON:-}
  if [ -z "$PY" ]; then
    for c in python3 python3.11; do command -v "$c" >/dev/null && { PY=$c; break; }; done
  fi
  [ -n "$PY" ] || die "no python3 found (set PYTHON=...)"
  command -v "$PY" >/dev/null || die "python interpreter '$PY' not found"
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' ||
    die "$PY is older than Python 3.8"
  log "python: creating venv $VENV with $("$PY" --version 2>&1) ($(command -v "$PY"))"
  rm -rf "$VENV"
  if ! "$PY" -m venv "$VENV"; then
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "python: venv failed; installing Debian python3-venv and retrying"
      DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv ||
        { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv; } ||
        die "apt-get install python3-venv failed"
      "$PY" -m venv "$VENV" || die "python -m venv $VENV failed"
    else
      die "python -m venv $VENV failed (install python3-venv?)"
    fi
  fi
  log "python: pip install $py_stamp_want"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    "pynsq==$PYNSQ_VERSION" "tornado==$TORNADO_VERSION" ||
    die "pip install of pynsq==$PYNSQ_VERSION tornado==$TORNADO_VERSION failed"
  "$VENV/bin/python" -c 'import nsq, tornado; print("interop-setup: python: ok, pynsq", nsq.__version__, "tornado", tornado.version)' ||
    die "pynsq installed but 'import nsq' fails"
  echo "$py_stamp_want" > "$py_stamp"
fi

# ---------------------------------------------------------------- Node / nsqjs
command -v node >/dev/null || die "node not found (Node >= 12.13 needed; Node 20 expected)"
NPM=${NPM:-npm}
command -v "$NPM" >/dev/null || die "npm not found"
node_stamp_want="nsqjs@$NSQJS_VERSION node=$(node --version)"
node_stamp=$NODE_PREFIX/.interop-stamp
node_ok() {
  [ "$(cat "$node_stamp" 2>/dev/null)" = "$node_stamp_want" ] &&
    node -e "require('$NODE_PREFIX/node_modules/nsqjs')" >/dev/null 2>&1
}
if node_ok; then
  log "node: nsqjs@$NSQJS_VERSION already installed in $NODE_PREFIX (skipping)"
else
  log "node: npm install --prefix $NODE_PREFIX nsqjs@$NSQJS_VERSION (optional snappy deps omitted)"
  rm -rf "$NODE_PREFIX"
  mkdir -p "$NODE_PREFIX"
  # --omit=optional: nsqjs's only optional dependency is snappystream (compression),
  # which the checks do not use.
  "$NPM" install --prefix "$NODE_PREFIX" --no-audit --no-fund --omit=optional \
    --loglevel=error "nsqjs@$NSQJS_VERSION" ||
    die "npm install nsqjs@$NSQJS_VERSION failed"
  node -e "const n = require('$NODE_PREFIX/node_modules/nsqjs'); if (!n.Reader || !n.Writer) process.exit(1); console.log('interop-setup: node: ok, nsqjs', require('$NODE_PREFIX/node_modules/nsqjs/package.json').version)" ||
    die "nsqjs installed but require('nsqjs') fails"
  echo "$node_stamp_want" > "$node_stamp"
fi

log "done: venv=$VENV node_modules=$NODE_PREFIX/node_modules"
