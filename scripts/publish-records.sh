#!/usr/bin/env bash
# Publish the records that are new in results/ (from scripts/queue-worker.sh, or copied from
# a GPU run's OUT_DIR/results): delete superseded record folders, rescore (temperatures),
# rebuild every table, the paper tables, perf.md and the site, check them
# (tests/test_committed_tables.py) and commit results/ and leaderboards/ with a message
# listing each new record's headline numbers.
#
#   scripts/publish-records.sh [PREFACE]
#
# $QUEUE_DIR/superseded.txt (optional) holds lines "SUITE/DATASET/METHOD OLD_HASH NEW_HASH":
# OLD is deleted once NEW has 3 seeds. Refuses while code has uncommitted changes (the
# records stay in results/ for the next try).
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 1
qdir=${QUEUE_DIR:-$repo/runs/queue}
mkdir -p "$qdir"
exec 9> "$qdir/publish.lock"
flock 9
export HF_HUB_OFFLINE=1
bench=.venv/bin/bench
data=${BENCH_DATA_DIR:-../shared/data/medmnist}
others=$(git status --porcelain | grep -v -E '^.. (results|leaderboards)/')
if [ -n "$others" ]; then
  echo "publish: uncommitted changes outside results/ and leaderboards/; not publishing:"; echo "$others" | head
  exit 1
fi
if [ -f "$qdir/superseded.txt" ]; then
  while read -r unit old new; do
    [ -d "results/$unit/$old" ] || continue
    if [ "$(find "results/$unit/$new" -name 'seed*.json' 2>/dev/null | wc -l)" -ge 3 ]; then
      git rm -rq "results/$unit/$old" && echo "removed results/$unit/$old: superseded by $new"
    fi
  done < "$qdir/superseded.txt"
fi
[ -z "$(git status --porcelain -- results)" ] && { echo "publish: nothing new in results/"; exit 0; }
# the records new or made again, before rescoring touches them
changed=$(git status --porcelain -uall -- results | grep -E '^(\?\?| M|A |M ) .*seed[0-9]+\.json$')
step() { "$@" > "$qdir/publish-step.log" 2>&1 || { echo "publish: $* failed:"; tail -n 5 "$qdir/publish-step.log"; exit 1; }; }
step "$bench" rescore --suite classification --data-dir "$data"
for suite in classification generation restoration; do step "$bench" leaderboard --suite "$suite"; done
for paper in diffmic-v2 dcube odm survey; do step "$bench" paper "$paper"; done
step "$bench" perf --table
step "$bench" site
step .venv/bin/python -m pytest -q -x -p no:cacheprovider tests/test_committed_tables.py
summary=$(echo "$changed" | .venv/bin/python -c '
import json, sys
out = []
for line in sys.stdin.read().splitlines():
    state, name = line[:2], line[3:]
    r = json.load(open(name))
    test = (r.get("metrics") or {}).get("test") or {}
    bits = [f"{k} {test[k]:.3f}" for k in ("auroc", "accuracy", "fid", "psnr") if isinstance(test.get(k), float)]
    wall = (r.get("timings") or {}).get("wall_s")
    bits += [f"{wall:.0f} s"] if wall else []
    head = "%s %s seed %s (%s, %s" % tuple(r.get(k) for k in ("dataset", "method", "seed", "preset", "status"))
    again = ", made again" if "M" in state else ""
    out.append(head + (": " + ", ".join(bits) if bits else "") + again + ")")
print("; ".join(out))')
git add -A results leaderboards
git commit -q -m "${1:-Records published}: ${summary:-superseded records removed}; tables rebuilt" && git log --oneline -1
