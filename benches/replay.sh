#!/usr/bin/env bash
# Benchmark: `dropguard replay` over a generated Django log (0.1% of its lines in
# database "missing table/column" errors) beside `rg -c` and `grep -c -E` with the
# same signatures (benches/replay_patterns.txt), page cache warm, same run.
#
#   benches/replay.sh [SIZE_MB]     (default 1024)
#
# Needs python3, hyperfine, ripgrep, GNU grep and GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
work=${DG_BENCH_DIR:-/tmp/dropguard-bench}
mkdir -p "$work"
log=$work/app-$SIZE.log
[[ -f $log ]] || python3 benches/gen_log.py "$log" "$SIZE"
cargo build --release --locked --bin dropguard >/dev/null
bin=$PWD/target/release/dropguard
patterns=$PWD/benches/replay_patterns.txt
nocfg=$work/no-config.toml   # replay reads the defaults when the config is absent

cat "$log" >/dev/null
echo "log: $(du -h "$log" | cut -f1), $(wc -l <"$log") lines"
echo "matches: dropguard $("$bin" --config "$nocfg" replay --json "$log" | grep -c '"sample"') events," \
  "rg $(rg -c -f "$patterns" "$log") lines, grep $(grep -c -E -f "$patterns" "$log") lines"
hyperfine --warmup 1 --runs 5 --style basic --output=pipe --export-markdown "$work/replay.md" \
  -n "dropguard replay" "$bin --config $nocfg replay --json $log" \
  -n "rg -c" "rg -c -f $patterns $log" \
  -n "grep -c -E" "grep -c -E -f $patterns $log"
cat "$work/replay.md"
/usr/bin/time -f "dropguard replay peak RSS: %M KiB" "$bin" --config "$nocfg" replay --json "$log" >/dev/null
