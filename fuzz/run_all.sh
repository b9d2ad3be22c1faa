#!/usr/bin/env bash
# fuzz/run_all.sh SECONDS [TARGET...] — runs each libFuzzer target for SECONDS,
# one after another (one process, nice 19), and appends one summary line per
# run to build-fuzz/runs.log:
#   <utc time> <target> seconds=<s> execs=<n> cov=<c> ft=<f> corpus=<k> result=<ok|CRASH|...>
# Full libFuzzer output: build-fuzz/logs/<target>-<utc>.log. Corpora grow in
# build-fuzz/corpus/<target>/ (seeded from build-fuzz/seeds/<target>/, made by
# fuzz/make_seeds.py). Findings land in build-fuzz/findings/<target>/; copy the
# minimised input to tests/fuzz-regress/<target>/ once fixed.
# No TARGET: every build-fuzz/fuzz_* binary. Runs are serialised with flock,
# so two invocations queue instead of competing for the CPU.
set -u
cd "$(dirname "$0")/.."
SECS=${1:?usage: fuzz/run_all.sh SECONDS [TARGET...]}
shift
B=build-fuzz
mkdir -p "$B/logs" "$B/corpus" "$B/findings"
if [ $# -eq 0 ]; then
    set -- $(ls "$B"/fuzz_* 2>/dev/null | sed 's|.*/fuzz_||')
fi
exec 9>"$B/run.lock"
flock 9
for t in "$@"; do
    bin=$B/fuzz_$t
    [ -x "$bin" ] || { echo "$(date -u +%FT%TZ) $t missing $bin" >> "$B/runs.log"; continue; }
    ts=$(date -u +%Y%m%dT%H%M%SZ)
    log=$B/logs/$t-$ts.log
    mkdir -p "$B/corpus/$t" "$B/findings/$t"
    seeds=()
    [ -d "$B/seeds/$t" ] && seeds+=("$B/seeds/$t")
    [ -d "tests/fuzz-regress/$t" ] && seeds+=("tests/fuzz-regress/$t")
    dict=()
    [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
    t0=$(date +%s)
    nice -n 19 "$bin" "$B/corpus/$t" "${seeds[@]}" "${dict[@]}" -max_total_time="$SECS" \
        -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$B/findings/$t/" > "$log" 2>&1
    rc=$?
    t1=$(date +%s)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
    ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
    corp=$(echo "$last" | grep -o 'corp: [0-9]*' | grep -o '[0-9]*')
    res=ok
    [ $rc -ne 0 ] && res="FAIL(rc=$rc:$(grep -m1 -oE 'ERROR: [A-Za-z]+: [a-z-]+|runtime error|timeout|out-of-memory|deadly signal' "$log" | head -1 | tr ' ' _))"
    echo "$(date -u +%FT%TZ) $t seconds=$((t1 - t0)) execs=${execs:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} result=$res log=$log" >> "$B/runs.log"
done
