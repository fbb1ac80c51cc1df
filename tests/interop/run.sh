#!/usr/bin/env bash
# tests/interop/run.sh NSQD_BINARY [extra nsqd args...]
# Runs the client interop checks against a freshly started nsqd-compatible binary:
# installs the clients (setup.sh), starts NSQD_BINARY on two free 127.0.0.1 ports with a
# temporary --data-path, runs pynsq_check.py (PYNSQ_COUNT, default 10000) and
# nsqjs_check.js (NSQJS_COUNT, default 2000), then stops the broker it started.
# Prints "interop: N passed, N failed" and exits non-zero if any check failed.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
NSQD=${1:?usage: run.sh NSQD_BINARY [extra nsqd args...]}
shift
PYNSQ_COUNT=${PYNSQ_COUNT:-10000}
NSQJS_COUNT=${NSQJS_COUNT:-2000}

bash "$HERE/setup.sh" || { echo "interop: setup.sh failed" >&2; exit 1; }

read -r TCP HTTP < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
DATA=$(mktemp -d "${TMPDIR:-/tmp}/nsqd-interop.XXXXXX")
"$NSQD" --tcp-address="127.0.0.1:$TCP" --http-address="127.0.0.1:$HTTP" --data-path="$DATA" "$@" \
  >"$DATA/nsqd.log" 2>&1 &
NSQD_PID=$!
cleanup() {
  kill "$NSQD_PID" 2>/dev/null && wait "$NSQD_PID" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

up=""
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$TCP") 2>/dev/null; then up=1; break; fi
  kill -0 "$NSQD_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "interop: $NSQD did not start listening on 127.0.0.1:$TCP; its log:" >&2
  cat "$DATA/nsqd.log" >&2
  echo "interop: 0 passed, 2 failed"
  exit 1
fi

pass=0 fail=0
run() {
  echo "interop: running $*"
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
}
run "$REPO/target/interop/venv/bin/python" "$HERE/pynsq_check.py" \
  --tcp "127.0.0.1:$TCP" --http "127.0.0.1:$HTTP" --topic "interop_pynsq_$$" --count "$PYNSQ_COUNT"
run node "$HERE/nsqjs_check.js" \
  --tcp "127.0.0.1:$TCP" --http "127.0.0.1:$HTTP" --topic "interop_nsqjs_$$" --count "$NSQJS_COUNT"

if [ "$fail" -gt 0 ]; then
  echo "interop: nsqd log ($DATA/nsqd.log), last 30 lines:" >&2
  tail -n 30 "$DATA/nsqd.log" >&2
fi
echo "interop: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
