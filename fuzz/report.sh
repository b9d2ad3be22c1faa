#!/usr/bin/env bash
# fuzz/report.sh [MIN_SECONDS] — the runs of build-fuzz/runs.log (fuzz/run_all.sh) that lasted at
# least MIN_SECONDS (default 600) as a markdown table, for docs/FUZZING.md.
cd "$(dirname "$0")/.."
min=${1:-600}
echo "| target | finished (UTC) | seconds | executions | cov | ft | corpus | result |"
echo "|---|---|---:|---:|---:|---:|---:|---|"
awk -v min="$min" '{
    f["end"] = $1
    for (i = 3; i <= NF; i++) { k = index($i, "="); if (k) f[substr($i, 1, k - 1)] = substr($i, k + 1) }
    if (f["seconds"] + 0 < min) next
    printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $2, f["end"], f["seconds"], f["execs"], f["cov"], f["ft"], f["corpus"], f["result"]
}' build-fuzz/runs.log
