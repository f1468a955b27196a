#!/usr/bin/env bash
# Idle cost (issue 17, item 1): what a sidecar costs while nothing happens.
# `dropguard run` (release build) with a file source (a glob over a directory of
# log files nobody writes), a Kafka source (librdkafka's mock cluster, run as its
# own process by examples/kafka_mock.rs, a topic nobody produces to) and a
# metrics scrape (a loopback endpoint serving a Django-like 5xx counter every
# 15 s by default; `interval` as configured), SQLite as the database. After a
# warm-up, CPU time (utime + stime from /proc) is read over SECONDS and RSS at
# the end.
#
# Peers in the same run, over the same SECONDS:
# - the physical floor: `sleep`, a process that only waits;
# - rsyslog (Debian's package, installed here if missing) with imfile tailing the
#   same glob through inotify and imkafka consuming the same topic: the nearest
#   log shipper the registries hold (no Vector or Fluent Bit package exists in
#   Debian 12, PyPI or npm); it has no metrics scrape.
#
#   benches/idle.sh [SECONDS] [WARMUP]      (default 60 10)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_=${1:-60}
WARMUP=${2:-10}
root=$PWD
work=${DG_BENCH_DIR:-/tmp/dropguard-idle}
target=${CARGO_TARGET_DIR:-$root/target}
bin=${DROPGUARD_BIN:-$target/release/dropguard}
[[ -n ${DROPGUARD_BIN:-} ]] || cargo build --release --locked --bin dropguard >/dev/null
cargo build --locked --example kafka_mock >/dev/null 2>&1
mock=$target/debug/examples/kafka_mock
if ! command -v rsyslogd >/dev/null || [[ ! -e /usr/lib/x86_64-linux-gnu/rsyslog/imkafka.so ]]; then
  apt-get install -y -qq rsyslog rsyslog-kafka >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq rsyslog rsyslog-kafka >/dev/null; }
fi

rm -rf "$work" && mkdir -p "$work/logs" "$work/state" "$work/rsyslog"
for n in 1 2 3; do
  printf '2026-12-02 07:00:00,000 INFO django.request "GET /health/ HTTP/1.1" 200\n' >"$work/logs/web-$n.log"
done
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true
}
trap cleanup EXIT

# The broker: its stdin stays open (fd 3) until this script ends.
mkfifo "$work/mock.in"
"$mock" app-logs 1 <"$work/mock.in" >"$work/mock.out" &
pids+=($!)
exec 3>"$work/mock.in"
for _ in $(seq 50); do [[ -s $work/mock.out ]] && break; sleep 0.1; done
brokers=$(head -n1 "$work/mock.out")

# The scrape target: a Django-like counter that never moves.
mkdir -p "$work/www"
printf '# TYPE django_http_responses_total_by_status_total counter\ndjango_http_responses_total_by_status_total{status="500"} 3\n' >"$work/www/metrics"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
pids+=($!)

cat >"$work/dropguard.toml" <<EOF
environment = "bench"
[database]
url = "sqlite://$work/app.db"
[state]
dir = "$work/state"
[[logs.file]]
path = "$work/logs/*.log"
[[logs.kafka]]
brokers = "$brokers"
topic = "app-logs"
group_id = "dropguard-idle"
[[metrics.scrape]]
url = "http://127.0.0.1:$port/metrics"
[server]
listen = "127.0.0.1:0"
EOF

cat >"$work/rsyslog/rsyslog.conf" <<EOF
global(workDirectory="$work/rsyslog")
module(load="imfile" mode="inotify")
module(load="imkafka")
input(type="imfile" file="$work/logs/*.log" tag="app")
input(type="imkafka" topic="app-logs" broker="$brokers" consumergroup="rsyslog-idle")
action(type="omfile" file="/dev/null")
EOF

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

"$bin" run --log-format json --config "$work/dropguard.toml" >"$work/dropguard.log" 2>&1 &
dg=$!
pids+=($dg)
rsyslogd -n -f "$work/rsyslog/rsyslog.conf" -i "$work/rsyslog/pid" >"$work/rsyslog.log" 2>&1 &
rs=$!
pids+=($rs)
sleep infinity &
floor=$!
pids+=($floor)

sleep "$WARMUP"
for p in $dg $rs $floor; do
  kill -0 "$p" || { echo "FATAL: process $p died during warm-up; see $work/*.log" >&2; exit 1; }
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min), $(nproc) cores"
declare -A before
for p in $dg $rs $floor; do before[$p]=$(ticks "$p"); done
sleep "$SECONDS_"
printf '%-34s %14s %12s\n' "process ($SECONDS_ s idle)" "CPU (% core)" "RSS (MiB)"
for spec in "dropguard (file+kafka+scrape):$dg" "rsyslog (imfile+imkafka):$rs" "sleep (the floor):$floor"; do
  name=${spec%:*} p=${spec##*:}
  used=$(($(ticks "$p") - ${before[$p]}))
  awk -v n="$name" -v t="$used" -v hz="$hz" -v s="$SECONDS_" -v kib="$(rss_kib "$p")" \
    'BEGIN { printf "%-34s %14.3f %12.1f\n", n, 100 * t / hz / s, kib / 1024 }'
done
curl -s "$(grep -o '"addr":"[^"]*"' "$work/dropguard.log" | head -n1 | cut -d'"' -f4 | sed 's|^|http://|')/readyz" | head -c 400 || true
echo
