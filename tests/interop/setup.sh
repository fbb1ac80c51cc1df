#!/usr/bin/env bash
# tests/interop/setup.sh: install the independent NSQ client libraries used by the
# interop checks, from the package registries only (PyPI, npm), into the build tree:
#
#   $REPO/target/interop/venv   Python venv with pynsq, tornado and python-snappy (+ cramjam)
#   $REPO/target/interop/node   npm prefix with nsqjs and snappystream (+ snappy, @node-rs/crc32)
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
# pynsq's snappy=True needs python-snappy (snappy.StreamCompressor/StreamDecompressor);
# 0.7.x is pure Python over cramjam, which has prebuilt wheels (never built from source here).
PYNSQ_VERSION=0.9.1
TORNADO_VERSION=6.4.2
PYSNAPPY_VERSION=0.7.3
CRAMJAM_VERSION=2.14.0
# nsqjs's snappy option needs its optional dependency snappystream, whose snappy and
# @node-rs/crc32 dependencies load prebuilt native addons from per-platform optional
# packages (@napi-rs/snappy-linux-x64-gnu, ...), so optional dependencies must be installed.
NSQJS_VERSION=0.13.0
SNAPPYSTREAM_VERSION=2.1.1
NODE_SNAPPY_VERSION=7.2.2
NODE_CRC32_VERSION=1.10.8

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
py_pkgs=("pynsq==$PYNSQ_VERSION" "tornado==$TORNADO_VERSION"
  "python-snappy==$PYSNAPPY_VERSION" "cramjam==$CRAMJAM_VERSION")
py_stamp_want="${py_pkgs[*]}"
py_stamp=$VENV/.interop-stamp
py_check='import nsq, tornado, snappy, nsq.snappy_socket
snappy.StreamDecompressor().decompress(snappy.StreamCompressor().compress(b"x"))'
py_ok() {
  [ -x "$VENV/bin/python" ] && [ "$(cat "$py_stamp" 2>/dev/null)" = "$py_stamp_want" ] &&
    "$VENV/bin/python" -c "$py_check" >/dev/null 2>&1
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
  # --only-binary: cramjam is Rust; fail clearly rather than try to compile it
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    --only-binary=cramjam,tornado "${py_pkgs[@]}" ||
    die "pip install of $py_stamp_want failed (no prebuilt cramjam/tornado wheel for this Python?)"
  "$VENV/bin/python" -c "$py_check" ||
    die "installed, but importing pynsq/tornado/python-snappy or a snappy round trip fails"
  "$VENV/bin/python" -c 'import nsq, tornado, importlib.metadata as m; print("interop-setup: python: ok, pynsq", nsq.__version__, "tornado", tornado.version, "python-snappy", m.version("python-snappy"))'
  echo "$py_stamp_want" > "$py_stamp"
fi

# ---------------------------------------------------------------- Node / nsqjs
command -v node >/dev/null || die "node not found (Node >= 12.13 needed; Node 20 expected)"
NPM=${NPM:-npm}
command -v "$NPM" >/dev/null || die "npm not found"
node_pkgs=("nsqjs@$NSQJS_VERSION" "snappystream@$SNAPPYSTREAM_VERSION"
  "snappy@$NODE_SNAPPY_VERSION" "@node-rs/crc32@$NODE_CRC32_VERSION")
node_stamp_want="${node_pkgs[*]} node=$(node --version)"
node_stamp=$NODE_PREFIX/.interop-stamp
# nsqjs loads, and a snappystream round trip works (native snappy and crc32 addons load)
node_check="const nm = '$NODE_PREFIX/node_modules/'
const n = require(nm + 'nsqjs')
if (!n.Reader || !n.Writer) throw new Error('nsqjs has no Reader/Writer')
const { SnappyStream, UnsnappyStream } = require(nm + 'snappystream')
const s = new SnappyStream(), u = new UnsnappyStream()
s.pipe(u)
u.on('data', (d) => { if (d.toString() !== 'x') throw new Error('snappy round trip'); process.exit(0) })
s.end(Buffer.from('x'))
setTimeout(() => { throw new Error('snappy round trip timed out') }, 5000)"
node_ok() {
  [ "$(cat "$node_stamp" 2>/dev/null)" = "$node_stamp_want" ] &&
    node -e "$node_check" >/dev/null 2>&1
}
if node_ok; then
  log "node: ${node_pkgs[*]} already installed in $NODE_PREFIX (skipping)"
else
  log "node: npm install --prefix $NODE_PREFIX ${node_pkgs[*]}"
  rm -rf "$NODE_PREFIX"
  mkdir -p "$NODE_PREFIX"
  # optional dependencies stay on: the native addons come as per-platform optional packages
  "$NPM" install --prefix "$NODE_PREFIX" --save-exact --no-audit --no-fund \
    --loglevel=error "${node_pkgs[@]}" ||
    die "npm install ${node_pkgs[*]} failed"
  node -e "$node_check" ||
    die "installed, but require('nsqjs') or a snappystream round trip fails (native addon for $(node -p 'process.platform + "-" + process.arch') missing?)"
  log "node: ok, nsqjs $(node -p "require('$NODE_PREFIX/node_modules/nsqjs/package.json').version"), snappystream $(node -p "require('$NODE_PREFIX/node_modules/snappystream/package.json').version")"
  echo "$node_stamp_want" > "$node_stamp"
fi

log "done: venv=$VENV node_modules=$NODE_PREFIX/node_modules"
