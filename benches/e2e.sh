#!/usr/bin/env bash
# The end-to-end figures of issue 10, over several runs of the four e2e cases
# (tests/integration/e2e.rs): time from the release's files landing to every
# snapshot complete, and from the first error line to the alert on the
# Slack-compatible receiver. Usage: benches/e2e.sh [RUNS] (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
out=$(mktemp)
for run in $(seq 1 "$runs"); do
  cargo test --locked --test integration e2e_ -- --nocapture 2>/dev/null | grep '^e2e ' >>"$out"
done
python3 - "$out" <<'PY'
import re, statistics, sys
rows = [l for l in open(sys.argv[1])]
snap = [float(re.search(r"snapshots complete ([0-9.]+) s", l).group(1)) for l in rows]
alert = [float(re.search(r"to alert ([0-9.]+) s", l).group(1)) for l in rows]
def q(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
for name, xs in [("release files -> snapshots complete", snap), ("first error line -> alert", alert)]:
    print(f"{name}: n={len(xs)} p50={q(xs, .5):.3f}s p99={q(xs, .99):.3f}s max={max(xs):.3f}s")
for kind in sorted({l.split(':')[0] for l in rows}):
    a = [float(re.search(r"to alert ([0-9.]+) s", l).group(1)) for l in rows if l.startswith(kind + ":")]
    print(f"  {kind}: alert p50={q(a, .5):.3f}s max={max(a):.3f}s")
PY
