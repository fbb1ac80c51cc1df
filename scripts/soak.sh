#!/usr/bin/env bash
# Long versions of the reliability scenarios (tests/hostile.rs scaled up, release build) and of
# the fuzzing, for RELIABILITY.md's figures. Takes about 15 minutes with the defaults.
#
#   scripts/soak.sh                   all of it (fuzzing 300 s per target)
#   FUZZ_SECS=0 scripts/soak.sh       skip fuzzing
#   scripts/soak.sh idle              only the scenarios whose test name contains "idle"
#
# Scale (environment, read by tests/hostile.rs):
#   NSQD_SOAK_IDLE_CONNS              idle connections held at once        (10000; suite: 2000)
#   NSQD_SOAK_CHURN                   connections opened and closed         (50000; suite: 3000)
#   NSQD_SOAK_RANDOM_CONNS            random-bytes connections              (5000; suite: 300)
#   NSQD_SOAK_STUCK_MESSAGES          messages past a consumer that never reads (100000; suite: 8000)
#   NSQD_SOAK_FANOUT_PER_PUBLISHER    fan-out messages per publisher, x16   (6250; suite: 125)
#   NSQD_SOAK_FANOUT_SECS             fan-out time bound                    (300; suite: 30)
#   NSQD_SOAK_SIGTERM_LOAD_MS         publishing before SIGTERM + restart   (1000; suite: 1000)
#
# Each connection costs the broker 1 fd (the socket, shared by its reader and writer tasks) and
# this process 1; 10,000 idle connections fit the 20,000 open-file limit of this machine. Figures are printed as
# "FIGURE ..." lines and kept in target/soak.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export NSQD_SOAK_IDLE_CONNS="${NSQD_SOAK_IDLE_CONNS:-10000}"
export NSQD_SOAK_CHURN="${NSQD_SOAK_CHURN:-50000}"
export NSQD_SOAK_RANDOM_CONNS="${NSQD_SOAK_RANDOM_CONNS:-5000}"
export NSQD_SOAK_STUCK_MESSAGES="${NSQD_SOAK_STUCK_MESSAGES:-100000}"
export NSQD_SOAK_FANOUT_PER_PUBLISHER="${NSQD_SOAK_FANOUT_PER_PUBLISHER:-6250}"
export NSQD_SOAK_FANOUT_SECS="${NSQD_SOAK_FANOUT_SECS:-300}"
export NSQD_SOAK_SIGTERM_LOAD_MS="${NSQD_SOAK_SIGTERM_LOAD_MS:-1000}"
FUZZ_SECS="${FUZZ_SECS:-300}"

ulimit -n "$(ulimit -Hn)"
mkdir -p target
# One scenario at a time, so each broker's RSS and the machine's 2 cores are its own.
cargo test --release --test hostile -- --nocapture --test-threads=1 "${1:-}" 2>&1 | tee target/soak.log
grep '^FIGURE' target/soak.log
if [ "$FUZZ_SECS" != 0 ]; then
    scripts/fuzz.sh "$FUZZ_SECS"
fi
