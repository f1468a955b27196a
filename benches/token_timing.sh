#!/usr/bin/env bash
# Token timing (issue 11): a release daemon on loopback with a 32-byte API token
# takes N refused `POST /api/v1/deploys` (wrong tokens of four kinds,
# interleaved; benches/token_timing.py), and the script compares their times:
# a token compared byte by byte with an early exit would answer the one that is
# wrong only in its last byte measurably later than one wrong from the first.
#
#   benches/token_timing.sh [N]     (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
work=${DG_BENCH_DIR:-/tmp/dropguard-token}
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=${DROPGUARD_BIN:-$target/release/dropguard}   # DROPGUARD_BIN: another build
[[ -n ${DROPGUARD_BIN:-} ]] || cargo build --release --locked --bin dropguard >/dev/null
rm -rf "$work" && mkdir -p "$work/logs"
token=$(python3 -c 'import secrets, string; print("".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32)))')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/dropguard.toml" <<CFG
environment = "token-timing"
[database]
url = "sqlite://$work/app.db"
[state]
dir = "$work/state"
[[logs.file]]
path = "$work/logs/*.log"
[server]
listen = "127.0.0.1:$port"
api_token = "$token"
CFG
# Each refusal is logged at WARN; the log goes to a file, as under systemd.
"$bin" --config "$work/dropguard.toml" run 2>"$work/daemon.log" &
daemon=$!
trap 'kill $daemon 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; kill -0 "$daemon"; done
python3 benches/token_timing.py 127.0.0.1 "$port" "$token" "$N"
echo "daemon: $(grep -c 'refused a request' "$work/daemon.log") refusals logged"
