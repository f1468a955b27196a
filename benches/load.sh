#!/usr/bin/env bash
# Load (issue 11): `dropguard run` (release build) tails a log file that takes
# RATE lines/s of ordinary Django/gunicorn lines for SECONDS, with a burst of
# database errors naming the dropped objects every BURST_EVERY s, after a real
# release: the fixture Django project on SQLite at its previous release with
# data, dropguard beside it, the release's migration files landing (dropguard
# preserves), `manage.py migrate` (dropguard sees the deploy). The error records
# are the real ones: the fixture's old replica logs Django's tracebacks on the
# migrated database once, and each burst repeats them with the current time.
#
# Reported: lines and bytes written against what the source counted
# (dropguard_source_events_total / _bytes_total), its truncation, UTF-8 and error
# counters; per burst, the correlated errors (sum of
# dropguard_correlated_errors_total) growing by exactly the burst's record count
# before the next burst, and how soon; peak RSS and CPU of the daemon. The peer,
# in the same run on the same file: `tail -F | grep -c -E -f
# benches/replay_patterns.txt` (the signatures as regexes), its matches, RSS and
# CPU.
#
#   benches/load.sh [RATE] [SECONDS] [BURST_EVERY] [BURST_RECORDS]
#                   (default 100000 60 10 60)
#
# Needs python3, GNU coreutils/grep, curl, and the test venv with Django
# (target/test-venv, made by the integration tests; DROPGUARD_TEST_PYTHON
# overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-100000}
SECONDS_=${2:-60}
EVERY=${3:-10}
BURST=${4:-60}
root=$PWD
work=${DG_BENCH_DIR:-/tmp/dropguard-load}
py=${DROPGUARD_TEST_PYTHON:-$root/target/test-venv/bin/python}
[[ -x $py ]] || py=/work/main/target/test-venv/bin/python
target=${CARGO_TARGET_DIR:-$root/target}
bin=${DROPGUARD_BIN:-$target/release/dropguard}   # DROPGUARD_BIN: another build
[[ -n ${DROPGUARD_BIN:-} ]] || cargo build --release --locked --bin dropguard >/dev/null

rm -rf "$work" && mkdir -p "$work/release"
project=$work/project
cp -a tests/fixtures/django_project "$project"
find "$project" \( -name __pycache__ -o -name '*.db' -o -name 'db.sqlite3*' \) -prune -exec rm -rf {} +
export DROPGUARD_TEST_DATABASE_URL=sqlite://$work/app.db PYTHONDONTWRITEBYTECODE=1
django() { (cd "$project" && "$py" "$@"); }

# The previous release: catalog 0010, orders 0003, legacy 0003, accounts 0002
# (tests/integration/restore.rs BEFORE_RELEASE); the later files are held back.
for spec in catalog:0010 orders:0003 legacy:0003 accounts:0002; do
  app=${spec%:*} last=${spec#*:}
  for f in "$project/$app"/migrations/0*.py; do
    name=$(basename "$f")
    # legacy.0003 names orders.0004 in run_before: it shipped before (pending).
    if ((10#${name:0:4} > 10#$last)) && [[ $name != 0004_remove_order_sales_rep.py ]]; then
      mv "$f" "$work/release/$app--$name"
    fi
  done
  django manage.py migrate "$app" "$last" -v0
done
django seed.py >/dev/null

port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$work/app.log
: >"$log"
cat >"$work/dropguard.toml" <<EOF
environment = "load"
[database]
url = "sqlite://$work/app.db"
[django]
project_dir = "$project"
auth_user_model = "accounts.User"
[state]
dir = "$work/state"
[[logs.file]]
path = "$log"
read_from = "beginning"
[deploys]
poll_interval = "200ms"
[detect]
window = "60s"
min_errors = 5
[server]
listen = "127.0.0.1:$port"
api_token = "load-t0ken"
EOF
url=http://127.0.0.1:$port
"$bin" --config "$work/dropguard.toml" run 2>"$work/daemon.log" &
daemon=$!
cleanup() { kill "$daemon" 2>/dev/null || true; }
trap cleanup EXIT
until curl -sf "$url/readyz" >/dev/null; do sleep 0.1; kill -0 "$daemon"; done

# The release lands, code first: dropguard preserves, then migrate runs.
for f in "$work"/release/*; do
  name=$(basename "$f"); mv "$f" "$project/${name%%--*}/migrations/${name#*--}"
done
# At least the 8 of the e2e test, and no new one for 2 s.
last=0 still=0
for _ in $(seq 600); do
  complete=$(curl -sf "$url/api/v1/snapshots" | "$py" -c 'import json,sys; print(sum(1 for s in json.load(sys.stdin) if s["complete"]))')
  if ((complete == last)); then still=$((still + 1)); else still=0 last=$complete; fi
  ((complete >= 8 && still >= 20)) && break
  sleep 0.1
done
echo "snapshots complete: $complete"
django manage.py migrate -v0
until curl -sf "$url/metrics" | grep -q '^dropguard_deploys_total{origin="django_migrations"} [1-9]'; do sleep 0.1; done
echo "deploy seen"
# The real error records, logged once by the old replica into another file.
django old_replica.py "$work/errors.log" release 1 0
echo "error records: $(grep -c ' ERROR django.request ' "$work/errors.log") ($(grep -o 'no such [a-z]*: [^ ]*' "$work/errors.log" | sort -u | tr '\n' ';'))"

# The peer reads the same file from its first byte, in the same run.
mkfifo "$work/peer.fifo"
tail -F -n +1 -s 0.1 "$log" >"$work/peer.fifo" 2>/dev/null &
tail_pid=$!
grep -c -E -f benches/replay_patterns.txt <"$work/peer.fifo" >"$work/peer.count" &
grep_pid=$!
peer_pids=$tail_pid,$grep_pid
coproc SAMPLER { exec python3 benches/load.py sample "$url/metrics" "$work/samples.jsonl" "$daemon" "$peer_pids"; }
sampler_in=${SAMPLER[1]}
python3 benches/load.py write "$log" "$work/errors.log" "$RATE" "$SECONDS_" "$EVERY" "$BURST" "$work/bursts.jsonl"
# Drain: until the source has read every byte written (or 60 s).
size=$(stat -c %s "$log")
for _ in $(seq 600); do
  read_=$(curl -sf "$url/metrics" | awk '/^dropguard_source_bytes_total/ {s+=$2} END {printf "%d", s}')
  ((read_ >= size)) && break
  sleep 0.1
done
sleep 2   # the last multi-line event waits for multiline_timeout (1 s)
exec {sampler_in}>&-
wait "$SAMPLER_PID" 2>/dev/null || true
kill "$tail_pid"
wait "$grep_pid" || true   # grep -c exits 1 on no match
incident=$(curl -sf "$url/api/v1/incidents")
python3 - "$work" "$size" "$incident" "$(cat "$work/peer.count" 2>/dev/null || echo '?')" <<'PY'
import json, sys
work, size, incidents, peer = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
bursts = [json.loads(l) for l in open(f"{work}/bursts.jsonl")]
summary = bursts.pop()
samples = [json.loads(l) for l in open(f"{work}/samples.jsonl")]
ok = [s for s in samples if "m" in s]
corr = lambda s: s["m"].get("dropguard_correlated_errors_total", 0)
last = ok[-1]["m"]
print(f"generator: {summary['lines']:,} lines ({summary['ordinary_lines']:,} ordinary, {summary['error_lines']:,} in "
      f"{summary['error_records']} error records), {summary['bytes'] / 2**20:.0f} MiB in {summary['seconds']} s: "
      f"{summary['rate']:,} lines/s achieved")
events = summary["ordinary_lines"] + summary["error_records"]
print(f"source: events {int(last.get('dropguard_source_events_total', 0)):,} (expected {events:,}: one per ordinary line, one per error record), "
      f"bytes {int(last.get('dropguard_source_bytes_total', 0)):,} of {size:,}; truncated {int(last.get('dropguard_source_truncated_events_total', 0))}, "
      f"invalid UTF-8 {int(last.get('dropguard_source_invalid_utf8_total', 0))}, "
      f"errors {sum(v for k, v in last.items() if k.startswith('dropguard_source_errors_total'))}")
# Read lag: how far behind the writer the source's bytes were, at each sample.
written_at = lambda t: None
for i, b in enumerate(bursts):
    before = [s for s in ok if s["t"] <= b["at"]]
    base = corr(before[-1]) if before else 0
    end = bursts[i + 1]["at"] if i + 1 < len(bursts) else summary["ended"] + 3
    within = [s for s in ok if b["at"] < s["t"] <= end]
    seen = next((s for s in within if corr(s) >= base + b["records"]), None)
    final = corr(within[-1]) if within else base
    print(f"burst {b['burst']} at {b['second']:5.1f} s: {b['records']} records -> correlated +{final - base:.0f}"
          + (f", all seen within {seen['t'] - b['at']:.2f} s" if seen else ", NOT all seen") )
d = [s["daemon"][0] for s in samples if s["daemon"] and s["daemon"][0]]
print(f"daemon: RSS first {d[0]['rss_kib'] / 1024:.1f} MiB, last {d[-1]['rss_kib'] / 1024:.1f} MiB, peak (VmHWM) {d[-1]['hwm_kib'] / 1024:.1f} MiB; "
      f"CPU {d[-1]['cpu_s'] - d[0]['cpu_s']:.1f} s over {d and (samples[-1]['t'] - samples[0]['t']):.1f} s")
# RSS by decile of the run, to see whether it grows.
n = len(d)
print("daemon RSS by tenth of the run (MiB): " + " ".join(f"{d[min(n - 1, k * n // 10)]['rss_kib'] / 1024:.1f}" for k in range(11)))
peers = list(zip(*[s["peer"] for s in samples if s["peer"]])) if samples[0]["peer"] else []
cpu = rss = hwm = 0
for series in peers:
    alive = [p for p in series if p]
    if alive:
        cpu += alive[-1]["cpu_s"] - alive[0]["cpu_s"]
        rss += max(p["rss_kib"] for p in alive)
        hwm += alive[-1]["hwm_kib"]
print(f"peer tail -F | grep -c -E: {peer} matching lines (expected {summary['matching_lines']}), peak RSS {hwm / 1024:.1f} MiB (sum), CPU {cpu:.1f} s")
for inc in incidents:
    print(f"incident {inc.get('id')}: state {inc.get('state')}, errors {inc.get('errors')}")
PY
