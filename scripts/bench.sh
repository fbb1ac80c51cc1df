#!/usr/bin/env bash
# The benchmark matrix: builds release, starts each broker itself on free loopback ports (in a
# temporary working directory), drives it with nsq-bench, samples its CPU time from /proc, and
# writes results.csv, results.jsonl, SVG charts and summary.md (ratio tables) under a results
# directory.
#
#   scripts/bench.sh                 full matrix (about 8 minutes on 2 cores, 16 with NSQD)
#   scripts/bench.sh --quick         smoke check, under a minute
#   NSQD=/path/to/nsqd scripts/bench.sh   same matrix against another nsqd in the same run
#
# Options:  --quick  --out DIR  --duration D  --warmup D  --no-build  --help
# Env:      NSQD         another nsqd-compatible binary to compare with (v1.3.0 for example)
#           NSQ_TOOLS    directory with NSQ's bench_writer/bench_reader (default: beside $NSQD)
#           NSQ_TOOL_REPS   runs of each NSQ tool per row, the median kept (default 5, 1 with --quick)
#           BENCH_DURATION, BENCH_WARMUP   override the per-run durations (tests use tiny ones)
#           NSQD_URING_BIN, NSQ_BENCH_BIN  use these binaries instead of target/release
#
# CPU placement (2 cores): with --cores 1 the broker is pinned to CPU 0 and nsq-bench to CPU 1;
# with --cores 2 both use CPUs 0-1. The raw baseline uses the same placement as a broker run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
BUILD=1
OUT=""
DURATION="${BENCH_DURATION:-}"
WARMUP="${BENCH_WARMUP:-}"

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --out) OUT="$2"; shift ;;
    --out=*) OUT="${1#--out=}" ;;
    --duration) DURATION="$2"; shift ;;
    --duration=*) DURATION="${1#--duration=}" ;;
    --warmup) WARMUP="$2"; shift ;;
    --warmup=*) WARMUP="${1#--warmup=}" ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    DURATION="${DURATION:-0.5s}"
    WARMUP="${WARMUP:-0.2s}"
else
    DURATION="${DURATION:-2s}"
    WARMUP="${WARMUP:-1s}"
fi
OUT="${OUT:-$ROOT/results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
CSV="$OUT/results.csv"
JSONL="$OUT/results.jsonl"
LOG="$OUT/bench.log"
: >"$LOG"

say() { echo "$*" | tee -a "$LOG" >&2; }

if [ "$BUILD" = 1 ] && [ -z "${NSQD_URING_BIN:-}" ]; then
    say "building release binaries"
    (cd "$ROOT" && cargo build --release --bin nsqd --bin nsq-bench) >>"$LOG" 2>&1 ||
        { tail -20 "$LOG" >&2; exit 1; }
fi
OURS_BIN="${NSQD_URING_BIN:-$ROOT/target/release/nsqd}"
BENCH="${NSQ_BENCH_BIN:-$ROOT/target/release/nsq-bench}"
OTHER_BIN="${NSQD:-}"
for b in "$OURS_BIN" "$BENCH" ${OTHER_BIN:+"$OTHER_BIN"}; do
    [ -x "$b" ] || { echo "bench.sh: $b is not an executable" >&2; exit 1; }
done
TOOLS="${NSQ_TOOLS:-${OTHER_BIN:+$(dirname "$OTHER_BIN")}}"

# The broker and nsq-bench each hold one descriptor per connection: 10,000 idle connections
# need room.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

NCPU="$(nproc)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/nsq-bench.XXXXXX")"
BROKER_PID=""
BROKER_ADDR=""
BROKER_HTTP=""
RAW_PID=""

stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}
cleanup() {
    local pid
    for pid in ${GROUP_PIDS[@]+"${GROUP_PIDS[@]}"}; do
        BROKER_PID="$pid"
        stop_broker
    done
    stop_broker
    BROKER_PID="$RAW_PID"
    stop_broker
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The CPUs a broker with N cores is pinned to, and the ones nsq-bench gets.
broker_cpus() { seq -s, 0 $(($1 - 1)); }
client_cpus() {
    if [ "$1" -lt "$NCPU" ]; then seq -s, "$1" $((NCPU - 1)) | cut -d, -f1-"$1"; else broker_cpus "$1"; fi
}

# launch DIR BIN ARGS...: starts a pinned broker in DIR (its working directory, which is also
# the data directory of a broker that only accepts the default data path) and waits for its
# listening line. Returns 1 if it exited first.
launch() {
    local dir="$1" cpus="$2" bin="$3"
    shift 3
    : >"$dir/log"
    (cd "$dir" && exec taskset -c "$cpus" "$bin" "$@") >/dev/null 2>"$dir/log" &
    BROKER_PID=$!
    for _ in $(seq 200); do
        BROKER_ADDR="$(grep -o 'TCP: listening on 127\.0\.0\.1:[0-9]*' "$dir/log" | head -1 | sed 's/.* on //')" || true
        BROKER_HTTP="$(grep -o 'HTTP: listening on 127\.0\.0\.1:[0-9]*' "$dir/log" | head -1 | sed 's/.* on //')" || true
        if [ -n "$BROKER_ADDR" ] && { [ "$bin" != "$OURS_BIN" ] || grep -q 'serving on' "$dir/log"; }; then
            return 0
        fi
        kill -0 "$BROKER_PID" 2>/dev/null || { wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""; return 1; }
        sleep 0.1
    done
    return 1
}

# start_broker LABEL CORES [extra broker flags...]: sets BROKER_PID and BROKER_ADDR.
start_broker() {
    local label="$1" cores="$2"
    shift 2
    local dir cpus
    dir="$(mktemp -d "$TMP/$label.XXXX")"
    cpus="$(broker_cpus "$cores")"
    if [ "$label" = nsqd-uring ]; then
        # --data-path and a free --http-address where the broker accepts them; a build that
        # refuses one names it, and runs without it (the working directory is the data path).
        local optional=(--data-path="$dir" --http-address=127.0.0.1:0) kept=() opt
        launch "$dir" "$cpus" "$OURS_BIN" --tcp-address=127.0.0.1:0 --cores="$cores" \
            "${optional[@]}" "$@" && return 0
        for opt in "${optional[@]}"; do
            grep -q -- "${opt%%=*}" "$dir/log" || kept+=("$opt")
        done
        launch "$dir" "$cpus" "$OURS_BIN" --tcp-address=127.0.0.1:0 --cores="$cores" \
            ${kept[@]+"${kept[@]}"} "$@" && return 0
    else
        launch "$dir" "$cpus" "$OTHER_BIN" --tcp-address=127.0.0.1:0 \
            --http-address=127.0.0.1:0 --data-path="$dir" "$@" && return 0
    fi
    say "bench.sh: $label did not start; its log:"
    cat "$dir/log" >&2
    stop_broker
    exit 1
}

# start_raw_server CORES [raw-server flags...]: the raw baseline's server, pinned and measured
# exactly like a broker (its own process, the broker's CPUs).
start_raw_server() {
    local cores="$1"
    shift
    local dir
    dir="$(mktemp -d "$TMP/raw.XXXX")"
    launch "$dir" "$(broker_cpus "$cores")" "$BENCH" raw-server --nsqd-tcp-address 127.0.0.1:0 \
        --cores "$cores" --cpus "$(broker_cpus "$cores")" --duration 3600s "$@" && return 0
    say "bench.sh: raw-server did not start; its log:"
    cat "$dir/log" >&2
    stop_broker
    exit 1
}

RUN=0
# bench LABEL CORES TAG MODE [nsq-bench flags...]: one measured run against the current broker.
bench() {
    local label="$1" cores="$2" tag="$3" mode="$4"
    shift 4
    RUN=$((RUN + 1))
    local line
    if ! line="$("$BENCH" "$mode" --nsqd-tcp-address "$BROKER_ADDR" --broker-pid "$BROKER_PID" --cores "$cores" --cpus "$(client_cpus "$cores")" \
        --duration "$DURATION" --warmup "$WARMUP" --label "$label" --tag "$tag" \
        --csv "$CSV" --json --quiet "$@" 2>>"$LOG")"; then
        say "  run $RUN failed: $label $mode $* (see $LOG)"
        return 0
    fi
    echo "$line" >>"$JSONL"
    say "  $(printf '%-11s %-8s %-6s' "$label" "$tag" "$mode") $* -> $(echo "$line" |
        grep -o '"msgs_per_s":[0-9.]*' | cut -d: -f2 | cut -d. -f1) msg/s"
}

IDLE_CONNECTIONS="${BENCH_IDLE_CONNECTIONS:-10000}"
SIZES=(64 200 1024 16384)
BATCHES=(1 100)
CORES=(1 2)
CONNS_SWEEP=(1 256)
LAT_LEVELS=(25 50 75 90)
if [ "$QUICK" = 1 ]; then
    SIZES=(200)
    BATCHES=(100)
    CORES=(1)
    CONNS_SWEEP=()
    LAT_LEVELS=(50)
fi
[ "$NCPU" -ge 2 ] || CORES=(1)

# sub preloads this much: 400 MB or 1,000,000 messages, whichever is fewer (100 MB / 200,000
# with --quick), so even 16 KiB messages take long enough to drain (~0.1 s) to be measured.
preload_count() {
    local budget=400000000 most=1000000 n
    [ "$QUICK" = 1 ] && budget=100000000 most=200000
    n=$((budget / $1))
    [ "$n" -gt "$most" ] && n="$most"
    echo "$n"
}
# Queue size for consuming runs: everything stays in memory on both brokers (nsqd would
# otherwise spill to disk, which is not what these runs compare). NSQ's bench_writer
# publishes up to 2.4M messages into one channel in its 1 s run here, so 2,000,000 spilled
# part of a fast broker's run to disk.
BIG_QUEUE=5000000

LABELS=(nsqd-uring)
if [ -n "$OTHER_BIN" ]; then
    OTHER_VERSION="$("$OTHER_BIN" --version 2>&1 | grep -o 'v[0-9][0-9.]*' | head -1)" || true
    LABELS+=("nsqd-${OTHER_VERSION:-other}")
fi

say "results: $OUT"
say "machine: $NCPU CPUs, $(uname -r), $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
say "durations: warmup $WARMUP, measure $DURATION; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
START=$(date +%s)

say "raw baseline"
for cores in "${CORES[@]}"; do
    for size in "${SIZES[@]}"; do
        for batch in "${BATCHES[@]}"; do
            # Two-core raw runs only for the shape the targets name, to keep the matrix short.
            if [ "$cores" = 2 ] && { [ "$size" != 200 ] || [ "$batch" != 100 ]; }; then continue; fi
            for reply in ack echo; do
                start_raw_server "$cores" --raw-reply "$reply" --batch "$batch"
                bench raw "$cores" raw raw --size "$size" --batch "$batch" --raw-reply "$reply"
                stop_broker
            done
        done
    done
done

# A group: every broker under comparison started with the same flags on the same CPUs, so each
# load can run against one broker and then the other back to back (an idle broker costs
# nothing), and slow drifts in machine load hit both sides of a ratio alike.
GROUP_PIDS=()
GROUP_ADDRS=()
GROUP_HTTP=()
start_group() {
    local cores="$1" i
    shift
    for i in "${!LABELS[@]}"; do
        start_broker "${LABELS[$i]}" "$cores" "$@"
        GROUP_PIDS[$i]="$BROKER_PID"
        GROUP_ADDRS[$i]="$BROKER_ADDR"
        GROUP_HTTP[$i]="$BROKER_HTTP"
        BROKER_PID=""
    done
}
stop_group() {
    local pid
    for pid in "${GROUP_PIDS[@]}"; do
        BROKER_PID="$pid"
        stop_broker
    done
    GROUP_PIDS=()
    GROUP_ADDRS=()
    GROUP_HTTP=()
}
# each CORES TAG MODE [flags...]: the same run against every broker of the group in turn.
each() {
    local i
    for i in "${!LABELS[@]}"; do
        BROKER_PID="${GROUP_PIDS[$i]}"
        BROKER_ADDR="${GROUP_ADDRS[$i]}"
        bench "${LABELS[$i]}" "$@"
    done
    BROKER_PID=""
}

# sweep_and_scale CORES MODE TOPIC_SUFFIX: the connection sweep (on the last core count only)
# and the 16-topic scaling run, MPUB of 100 x 200 B.
#
# With one connection (the load generator's executor 0, on the first client CPU) and more than
# one broker core, the topic is placed on nsqd-uring's last core: where the CPUs are shared,
# that core is not on the generator's CPU. Left to the name's hash, this row measured 3.0M or
# 1.5M msg/s depending on the run number. The other-CPU placement is the slower one for us
# (each MPUB's OK wakes the generator on the other CPU: an IPI, 38 % of the broker's samples),
# so the row is conservative; on the generator's own CPU the ping-pong never leaves one CPU.
sweep_and_scale() {
    local cores="$1" mode="$2" suffix="$3" conns topic
    if [ "$cores" = "${CORES[-1]}" ]; then
        for conns in "${CONNS_SWEEP[@]}"; do
            topic="c$RUN$suffix"
            if [ "$conns" = 1 ] && [ "$cores" -gt 1 ]; then
                topic="$("$BENCH" topic-on-core --prefix "c${RUN}_" --suffix "$suffix" \
                    --core $((cores - 1)) --cores "$cores")"
            fi
            each "$cores" conn "$mode" --topic "$topic" --batch 100 --connections "$conns"
        done
    fi
    each "$cores" scale "$mode" --topic "s$RUN$suffix" --batch 100 --topics 16
}

# latency_levels: the open-loop latency rows (x1, inside the consume group). Each level runs
# against every broker, then against a raw echo server on the broker's CPU: the same generator
# and schedule with no broker in the path, the floor this machine puts under any broker's
# latency at that rate.
latency_levels() {
    local level rate raw_addr
    start_raw_server 1 --raw-reply echo
    RAW_PID="$BROKER_PID" raw_addr="$BROKER_ADDR"
    BROKER_PID=""
    for level in "${LAT_LEVELS[@]}"; do
        rate=$((LAT_MAX * level / 100))
        [ "$rate" -gt 0 ] || rate=1000
        each 1 "lat$level" latency --topic "lat$RUN" --rate "$rate" --output-buffer-timeout -1
        BROKER_PID="$RAW_PID" BROKER_ADDR="$raw_addr"
        bench raw 1 "lat$level" raw --rate "$rate" --raw-reply echo
    done
    stop_broker
    RAW_PID=""
}

run_matrix() {
    local cores size batch
    for cores in "${CORES[@]}"; do
        say "--cores $cores: publish (ephemeral topics, default queue)"
        start_group "$cores"
        for size in "${SIZES[@]}"; do
            for batch in "${BATCHES[@]}"; do
                each "$cores" tp pub --topic "p$RUN#ephemeral" --size "$size" --batch "$batch"
            done
        done
        sweep_and_scale "$cores" pub "#ephemeral"
        stop_group

        say "--cores $cores: consume (queue $BIG_QUEUE)"
        start_group "$cores" --mem-queue-size="$BIG_QUEUE"
        for size in "${SIZES[@]}"; do
            each "$cores" tp sub --topic "sub$RUN" --size "$size" --count "$(preload_count "$size")"
            for batch in "${BATCHES[@]}"; do
                each "$cores" tp pubsub --topic "ps$RUN" --size "$size" --batch "$batch"
            done
        done
        sweep_and_scale "$cores" pubsub ""
        [ "$cores" = 1 ] && latency_levels
        stop_group

        if [ -n "$TOOLS" ] && [ -x "$TOOLS/bench_writer" ] && [ -x "$TOOLS/bench_reader" ]; then
            # A group of its own: after the rows above, a broker holding their memory grew
            # into guest memory at several times the CPU per message (60 % of its samples in
            # the kernel's page clearing), which said nothing about either broker.
            say "--cores $cores: NSQ's bench_writer and bench_reader (fresh brokers, queue $BIG_QUEUE)"
            start_group "$cores" --mem-queue-size="$BIG_QUEUE"
            nsq_tools "$cores"
            stop_group
        fi

        if [ "$cores" = 1 ]; then
            # Consuming a backlog that lives on disk (--mem-queue-size=0 on both brokers).
            say "--cores 1: consume from the disk queue"
            start_group 1 --mem-queue-size=0
            each 1 disk sub --topic "disk$RUN" --size 200 --count "$([ "$QUICK" = 1 ] && echo 5000 || echo 200000)"
            stop_group
        fi
    done
    if [ "$QUICK" = 0 ]; then
        # 10,000 as asked for: the broker holds one descriptor per connection, so this fits the
        # 20,000 hard limit containers often have. One broker at a time: the descriptors are
        # per process but the connections share the machine.
        local label
        for label in "${LABELS[@]}"; do
            say "$label: $IDLE_CONNECTIONS idle connections"
            start_broker "$label" 1
            bench "$label" 1 idle idle --connections "$IDLE_CONNECTIONS"
            stop_broker
        done
    fi
}

# delete_topic HTTP_ADDR TOPIC: POST /topic/delete over HTTP/1.0 (bash's /dev/tcp), reply ignored.
delete_topic() {
    local host="${1%:*}" port="${1##*:}"
    [ -n "$1" ] || return 0
    exec 3<>"/dev/tcp/$host/$port" || return 0
    printf 'POST /topic/delete?topic=%s HTTP/1.0\r\nContent-Length: 0\r\n\r\n' "$2" >&3
    timeout 5 cat <&3 >/dev/null || true
    exec 3<&- 3>&-
}

# create_channel ADDR TOPIC CHANNEL: SUB over protocol V2 (bash's /dev/tcp), wait for the OK,
# disconnect; the channel stays, as nsqd keeps a non-ephemeral channel without consumers.
create_channel() {
    local host="${1%:*}" port="${1##*:}" reply
    if ! exec 3<>"/dev/tcp/$host/$port"; then
        say "  could not connect to $1 to create channel $2/$3"
        return 0
    fi
    printf '  V2SUB %s %s\n' "$2" "$3" >&3
    reply="$(timeout 5 head -c 10 <&3 | tail -c 2)" || true
    exec 3<&- 3>&-
    [ "$reply" = OK ] || say "  could not create channel $2/$3 on $1 (reply: $reply)"
}

# NSQ's own bench_writer and bench_reader against every broker of the group: one CSV row per
# broker and tool, with the broker's CPU time from /proc around each run. NSQ_TOOL_REPS rounds
# (5; 1 with --quick); in each, every broker in turn gets a 1 s bench_writer on a new topic,
# then a 1 s bench_reader on it, then the topic is deleted (the reader takes about half of
# what the writer wrote). So a broker's memory stays at one round's and is reused from round
# to round, where growing by a gigabyte a round into memory the guest had not touched cost
# either broker several times the CPU per message, and a slow minute hits every broker alike.
# Each row's rate is the round with the median rate (a single 1 s run of either broker moved by
# up to 3x between runs); its CPU per message is the broker's CPU time over every round divided
# by every round's messages, read with `nsq-bench cpu-time` (nanoseconds, where
# `/proc/<pid>/stat` counts 10 ms ticks: 2 % of a round of ours).
cpu_ns() { "$BENCH" cpu-time --pid "$1" 2>/dev/null || echo 0; }
nsq_tools() {
    local cores="$1" secs=1 reps rep i tool topic out rate before after
    reps="${NSQ_TOOL_REPS:-$([ "$QUICK" = 1 ] && echo 1 || echo 5)}"
    local -A runs=()
    for rep in $(seq "$reps"); do
        for i in "${!LABELS[@]}"; do
            RUN=$((RUN + 1))
            topic="nsqtools$RUN"
            # bench_reader's channel exists before bench_writer publishes, so the writer's
            # messages go straight to it. Without it a topic holds them until the reader's SUB
            # creates the channel, and the reader's 1 s window paid for moving the writer's
            # whole backlog (1.9M messages from a fast writer) into the channel.
            create_channel "${GROUP_ADDRS[$i]}" "$topic" ch
            for tool in bench_writer bench_reader; do
                before="$(cpu_ns "${GROUP_PIDS[$i]}")"
                out="$(taskset -c "$(client_cpus "$cores")" "$TOOLS/$tool" \
                    --nsqd-tcp-address "${GROUP_ADDRS[$i]}" \
                    --topic "$topic" --runfor "${secs}s" --size 200 2>&1 | tail -1)" || true
                after="$(cpu_ns "${GROUP_PIDS[$i]}")"
                rate="$(echo "$out" | grep -o '[0-9.]*ops/s' | sed 's/ops.s//')" || true
                if [ -z "$rate" ]; then
                    say "  $tool failed against ${LABELS[$i]}: $out"
                    continue
                fi
                runs["$i $tool"]+="$rate $((after - before))"$'\n'
            done
            delete_topic "${GROUP_HTTP[$i]}" "$topic"
        done
    done
    for i in "${!LABELS[@]}"; do
        for tool in bench_writer bench_reader; do
            nsq_tool_row "${LABELS[$i]}" "$cores" "$tool" "$secs" "${runs["$i $tool"]:-}"
        done
    done
}
# nsq_tool_row LABEL CORES TOOL SECS RUNS: the CSV row and log line of RUNS ("rate cpu_ns"
# lines): the median rate, and CPU per message over all of them.
nsq_tool_row() {
    local label="$1" cores="$2" tool="$3" secs="$4" count rate cpu_s cpu mode=pub
    [ -n "$5" ] || return 0
    count="$(printf '%s' "$5" | grep -c .)"
    # The median run by rate (the lower middle for an even count).
    read -r rate _ < <(printf '%s' "$5" | sort -g | sed -n "$(((count + 1) / 2))p")
    # The mean CPU of a round in seconds (the CSV's broker_cpu_s), and CPU per message.
    read -r cpu_s cpu < <(printf '%s' "$5" | awk -v s="$secs" -v n="$count" \
        '{ ns += $2; msgs += $1 * s } END { printf "%.3f %.3f\n", ns / n / 1e9, (msgs > 0 ? ns / msgs : 0) }')
    [ "$tool" = bench_reader ] && mode=sub
    # label,tag,mode,size,batch,connections,cores,topics,rate,pipeline,raw_reply,duration_s,
    # messages,msgs_per_s,mb_per_s,offered_per_s,p50..max(6),broker_cpu_s,cpu_ns_per_msg,...
    printf '%s,nsqtools,%s,200,200,1,%s,1,0,1,,%s,%.0f,%.0f,%.2f,%.0f,,,,,,,%.3f,%s,,,,0,0\n' \
        "$label" "$mode" "$cores" "$secs" "$(awk -v r="$rate" -v s="$secs" 'BEGIN{print r*s}')" \
        "$rate" "$(awk -v r="$rate" 'BEGIN{print r*200/1e6}')" "$rate" \
        "$cpu_s" "$cpu" >>"$CSV"
    say "  $(printf '%-11s %-8s %-6s' "$label" nsqtools "$tool") -> ${rate%.*} msg/s (median of $count: $(printf '%s' "$5" | awk '{ printf "%d ", $1 }'))"
}

# Latency levels are fractions of the broker under test's pubsub PUB throughput (16
# connections, one core, consumers unbuffered as in the latency rows); the other broker gets the
# same absolute rates (equal offered load).
LAT_MAX=0
measure_lat_max() {
    start_broker nsqd-uring 1 --mem-queue-size="$BIG_QUEUE"
    local line
    line="$("$BENCH" pubsub --nsqd-tcp-address "$BROKER_ADDR" --cores 1 --cpus "$(client_cpus 1)" \
        --duration "$DURATION" --warmup "$WARMUP" --topic latmax --output-buffer-timeout -1 \
        --json --quiet 2>>"$LOG")" || true
    LAT_MAX="$(echo "$line" | grep -o '"msgs_per_s":[0-9.]*' | cut -d: -f2 | cut -d. -f1)"
    LAT_MAX="${LAT_MAX:-0}"
    stop_broker
    say "latency levels: ${LAT_LEVELS[*]}% of $LAT_MAX msg/s (pubsub PUB, 16 connections, 1 core, unbuffered consumers)"
}
measure_lat_max

run_matrix

say "plots"
"$BENCH" plot --csv "$CSV" --out "$OUT" --ours nsqd-uring >>"$LOG" 2>&1 || say "plotting failed (see $LOG)"
say "done in $(($(date +%s) - START))s: $CSV (load average at end: $(cut -d' ' -f1-3 /proc/loadavg))"
if [ -f "$OUT/summary.md" ]; then
    cat "$OUT/summary.md"
fi
