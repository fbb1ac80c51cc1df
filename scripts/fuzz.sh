#!/usr/bin/env bash
# Long fuzzing runs of every cargo-fuzz target in fuzz/ (libFuzzer + AddressSanitizer, nightly).
#
#   scripts/fuzz.sh                 600 s per target
#   scripts/fuzz.sh 60              60 s per target (the bounded run recorded in RELIABILITY.md)
#   scripts/fuzz.sh 3600 decode_v2  one target for an hour
#
# The committed seeds are fuzz/corpus/<target>; libFuzzer grows its working corpus in
# fuzz/work/<target> (ignored by git). Crashes land in fuzz/artifacts/<target>/: turn each into
# a unit test next to the code it broke, then fix it. Each target's final stats (executions,
# coverage, peak RSS) are printed and kept in fuzz/work/<target>.log.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
SECS="${1:-600}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(decode_v2 mpub_body identify_json options disk_formats)

command -v cargo-fuzz >/dev/null || { echo "needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 2; }
rustup run nightly rustc --version >/dev/null || { echo "needs a nightly toolchain: rustup toolchain install nightly" >&2; exit 2; }

cargo +nightly fuzz build -O
status=0
for t in "${TARGETS[@]}"; do
    mkdir -p "work/$t"
    echo "== $t: ${SECS}s"
    # 20 KB inputs reach the 16 KiB line limit; 2 GB RSS catches runaway allocations.
    if ! cargo +nightly fuzz run -O "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -max_len=20000 -rss_limit_mb=2048 -print_final_stats=1 \
        >"work/$t.log" 2>&1; then
        status=1
        echo "!! $t found a crash; see fuzz/work/$t.log and fuzz/artifacts/$t/"
    fi
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^#[0-9]+.*DONE' "work/$t.log" || true
done
exit $status
