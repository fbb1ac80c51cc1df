#!/usr/bin/env bash
# Profiles one broker under one nsq-bench load and draws a flame graph of the broker's CPU time
# (kernel and user, with call stacks): the "where the time goes" behind a PERF.md row.
#
#   scripts/profile.sh [options] -- MODE [nsq-bench flags...]
#   scripts/profile.sh --name pubsub-pub-200 -- pubsub --size 200 --batch 1 --connections 16
#   NSQD=~/.cache/nsq-ref/bin/nsqd scripts/profile.sh -- pub --size 200 --batch 100
#
# Options:  --name NAME      file name stem (default: the mode)
#           --out DIR        where NAME.svg, NAME.folded and NAME.top.txt go (default results/profile)
#           --seconds S      how long perf samples (default 2), after a 1 s warm-up
#           --cores N        broker cores (default 1: broker on CPU 0, nsq-bench on CPU 1)
#           --broker-args "..."  extra broker flags (default: --mem-queue-size=10000 for pub,
#                          which also publishes to an #ephemeral topic unless --topic is given,
#                          as bench.sh's pub rows do; --mem-queue-size=2000000 otherwise)
#           --no-build       use target/release as it is
# Env:      NSQD             profile this nsqd-compatible binary instead of ours
#           KEEP_FOLDED=1    keep NAME.folded (the collapsed stacks) too
#
# Needs perf (Debian: linux-perf) and inferno (cargo install inferno); both are installed here
# when missing. Stacks are unwound with DWARF (--call-graph dwarf), so no special build is
# needed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME=""
OUT="$ROOT/results/profile"
SECONDS_TO_SAMPLE=2
CORES=1
BROKER_ARGS=""
BROKER_ARGS_GIVEN=0
BUILD=1

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
    --name) NAME="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --seconds) SECONDS_TO_SAMPLE="$2"; shift ;;
    --cores) CORES="$2"; shift ;;
    --broker-args) BROKER_ARGS="$2"; BROKER_ARGS_GIVEN=1; shift ;;
    --no-build) BUILD=0 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "profile.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[ $# -ge 1 ] || { usage >&2; exit 2; }
MODE="$1"
NAME="${NAME:-$MODE}"
shift
# A pub load with no consumer keeps every message: with a large queue the profile measures the
# guest faulting in gigabytes of fresh memory (66 % clear_page_erms for 16 KiB MPUBs), not
# the broker. Profile it as bench.sh measures it instead.
TOPIC_ARGS=()
if [ "$MODE" = pub ]; then
    [ "$BROKER_ARGS_GIVEN" = 1 ] || BROKER_ARGS="--mem-queue-size=10000"
    case " $* " in
    *" --topic "* | *" --topic="*) ;;
    *) TOPIC_ARGS=(--topic "profile#ephemeral") ;;
    esac
else
    [ "$BROKER_ARGS_GIVEN" = 1 ] || BROKER_ARGS="--mem-queue-size=2000000"
fi

if ! command -v perf >/dev/null; then
    apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null
fi
if ! command -v inferno-flamegraph >/dev/null; then
    cargo install inferno --locked --quiet
fi
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet --bin nsqd --bin nsq-bench)
fi
BENCH="$ROOT/target/release/nsq-bench"
BROKER_BIN="${NSQD:-$ROOT/target/release/nsqd}"

NCPU="$(nproc)"
broker_cpus="$(seq -s, 0 $((CORES - 1)))"
if [ "$CORES" -lt "$NCPU" ]; then
    client_cpus="$(seq -s, "$CORES" $((NCPU - 1)) | cut -d, -f1-"$CORES")"
else
    client_cpus="$broker_cpus"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/nsq-profile.XXXXXX")"
BROKER_PID=""
cleanup() {
    [ -z "$BROKER_PID" ] || kill "$BROKER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
flags=(--tcp-address="127.0.0.1:$port" --http-address=127.0.0.1:0 --data-path="$TMP")
[ -n "${NSQD:-}" ] || flags+=(--cores="$CORES")
# shellcheck disable=SC2086 # BROKER_ARGS is a list of flags
(cd "$TMP" && exec taskset -c "$broker_cpus" "$BROKER_BIN" "${flags[@]}" $BROKER_ARGS) \
    >/dev/null 2>"$TMP/broker.log" &
BROKER_PID=$!
for _ in $(seq 100); do
    grep -q "TCP: listening on" "$TMP/broker.log" && break
    kill -0 "$BROKER_PID" 2>/dev/null || { cat "$TMP/broker.log" >&2; exit 1; }
    sleep 0.1
done

mkdir -p "$OUT"
run_for="$(awk -v s="$SECONDS_TO_SAMPLE" 'BEGIN{print s + 2}')s"
"$BENCH" "$MODE" --nsqd-tcp-address "127.0.0.1:$port" --cores "$CORES" --cpus "$client_cpus" \
    --broker-pid "$BROKER_PID" --warmup 1s --duration "$run_for" --quiet \
    ${TOPIC_ARGS[@]+"${TOPIC_ARGS[@]}"} "$@" >"$OUT/$NAME.bench.txt" 2>&1 &
BENCH_PID=$!
sleep 1
perf record -q -F 1999 --call-graph dwarf,16384 -p "$BROKER_PID" -o "$TMP/perf.data" \
    -- sleep "$SECONDS_TO_SAMPLE" >/dev/null 2>&1
wait "$BENCH_PID" || true

perf script -i "$TMP/perf.data" 2>/dev/null | inferno-collapse-perf >"$OUT/$NAME.folded"
inferno-flamegraph --title "$(basename "$BROKER_BIN"): nsq-bench $MODE $*" \
    <"$OUT/$NAME.folded" >"$OUT/$NAME.svg"
{
    echo "# by binary (kernel = the kernel's share of the broker's CPU)"
    perf report -i "$TMP/perf.data" --no-children --sort dso -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -8
    echo "# by symbol (0.5 % and up)"
    perf report -i "$TMP/perf.data" --no-children --sort dso,symbol -g none --percent-limit 0.5 \
        2>/dev/null | grep -v '^#' | grep -v '^$'
} >"$OUT/$NAME.top.txt" || true
echo "profile.sh: $OUT/$NAME.svg ($(wc -l <"$OUT/$NAME.folded") stacks); top symbols in $OUT/$NAME.top.txt"
[ -z "${KEEP_FOLDED:-}" ] && rm -f "$OUT/$NAME.folded"
cat "$OUT/$NAME.bench.txt"
