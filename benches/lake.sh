#!/usr/bin/env bash
# Lake benchmark: generates a MACHINES x DAYS lake with the release build, reports its
# size and the generator's time, then times `mdesnap query` (whole process: start,
# manifest scan, plan, run) for a few typical queries, median of RUNS runs each.
#
#   cargo build --release && benches/lake.sh            # 100,000 machines x 30 days
#   MACHINES=10000 DAYS=7 benches/lake.sh                # smaller
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MDESNAP:-target/release/mdesnap}
MACHINES=${MACHINES:-100000}
DAYS=${DAYS:-30}
RUNS=${RUNS:-5}
LAKE=${LAKE:-${TMPDIR:-/tmp}/mdesnap-bench-lake}

[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release first" >&2; exit 2; }

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

rm -rf "$LAKE"
t0=$(now)
"$BIN" generate --lake "$LAKE" --machines "$MACHINES" --days "$DAYS" --quiet >/dev/null
t1=$(now)
echo "generate: $MACHINES machines x $DAYS days in $(ms "$t0" "$t1") ms"
echo "lake size: $(du -sh "$LAKE" | cut -f1) ($(du -sb "$LAKE" | cut -f1) bytes), machines table $(du -sh "$LAKE/machines" | cut -f1)"

bench() {
  local name=$1 sql=$2
  local times=()
  for _ in $(seq "$RUNS"); do
    local a b
    a=$(now)
    "$BIN" query --lake "$LAKE" --format csv "$sql" >/dev/null
    b=$(now)
    times+=("$(ms "$a" "$b")")
  done
  printf '%-28s median %5s ms  (runs: %s)\n' "$name" "$(printf '%s\n' "${times[@]}" | median)" "${times[*]}"
}

bench "count (latest)" "SELECT count(*) FROM machines"
bench "group-by over history" "SELECT snapshot, health_status, count(*) FROM machines_history GROUP BY 1, 2"
bench "latest-snapshot filter" "SELECT id, computer_dns_name, last_seen FROM machines WHERE risk_score = 'High' AND os_platform = 'Windows11'"
bench "history, one snapshot" "SELECT count(*) FROM machines_history WHERE snapshot = (SELECT max(snapshot) FROM snapshots) AND health_status <> 'Active'"
bench "history, distinct ids" "SELECT count(DISTINCT id) FROM machines_history"
