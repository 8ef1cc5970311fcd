#!/usr/bin/env bash
# Run the integration suite (or the tests named) again and again on a busy machine, until it
# fails or has passed N times in a row; keep every run's worker logs.
#
#   tests/soak.sh [-n RUNS] [-l LOADERS] [pytest args...]
#
# -n RUNS     passes in a row wanted (default 5)
# -l LOADERS  processes spinning on a CPU beside the suite (default 1)
# Each run's pytest temp folder (the workers' logs: */worker-*.log) and output are kept under
# .soak/run-K/; the script exits 1 at the first failed run, naming its folder.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=5
loaders=1
while getopts "n:l:" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    l) loaders=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
args=("$@")
((${#args[@]})) || args=(-m integration)

make --no-print-directory setup >/dev/null
mkdir -p .soak
pids=()
cleanup() { ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
for ((i = 0; i < loaders; i++)); do
  .venv/bin/python -c 'while True: pass' &
  pids+=($!)
done

for ((k = 1; k <= runs; k++)); do
  dir=.soak/run-$k
  rm -rf "$dir"
  mkdir -p "$dir"
  started=$(date +%s)
  if .venv/bin/pytest -p no:cacheprovider --basetemp="$dir/tmp" "${args[@]}" >"$dir/pytest.log" 2>&1; then
    echo "soak: run $k passed in $(($(date +%s) - started)) s ($(tail -1 "$dir/pytest.log"))"
  else
    echo "soak: run $k FAILED after $(($(date +%s) - started)) s; output and worker logs in $dir"
    grep -E '^(FAILED|ERROR) ' "$dir/pytest.log" || tail -20 "$dir/pytest.log"
    exit 1
  fi
done
echo "soak: $runs runs passed in a row with $loaders CPU loader(s)"
