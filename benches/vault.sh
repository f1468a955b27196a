#!/usr/bin/env bash
# Benchmark: preserve and restore of 1,000,000 rows beside the engines' own dump
# tools, measured in the same run. Columns: bigint id, varchar(40), timestamptz
# (datetime(6) on MariaDB), numeric(12,2), 200-byte text.
#
#   benches/vault.sh [ROWS] [ENGINE]   (default 1000000, both engines; ENGINE is
#                                       postgres or mariadb to run one)
#
# Needs the local PostgreSQL (postgres@127.0.0.1:5432) and MariaDB (root@127.0.0.1:3306),
# pg_dump/pg_restore, mysqldump/mysql, GNU time. Prints rows/s, the ratio to the peer
# and peak RSS for each step.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
ONLY=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"; psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS dg_bench" >/dev/null 2>&1 || true; mysql -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS dg_bench" 2>/dev/null || true' EXIT

cargo build --release --locked --bin dropguard >/dev/null
bin=$PWD/target/release/dropguard

# measure NAME COMMAND...: wall seconds and peak RSS (KiB) of one run.
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  read -r secs rss <"$work/time"
  printf '%s %s %s\n' "$name" "$secs" "$rss" >>"$work/results"
}

report() {
  local engine=$1 ours=$2 peer=$3
  awk -v rows="$ROWS" -v e="$engine" -v o="$ours" -v p="$peer" '
    $1 == o { os = $2; orss = $3 } $1 == p { ps = $2; prss = $3 }
    END {
      printf "| %s | %s | %d | %.2f s | %.0f | %.1f MiB | %s | %.2f s | %.0f | %.1f MiB | %.2f |\n",
        e, o, rows, os, rows / os, orss / 1024, p, ps, rows / ps, prss / 1024, ps / os
    }' "$work/results"
}

echo "| engine | dropguard step | rows | time | rows/s | peak RSS | peer | peer time | peer rows/s | peer peak RSS | peer time / ours |"
echo "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"

# PostgreSQL
if [[ -z $ONLY || $ONLY == postgres ]]; then
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS dg_bench" -c "CREATE DATABASE dg_bench"
psql -q -h 127.0.0.1 -U postgres dg_bench <<SQL
CREATE TABLE big (id bigint PRIMARY KEY, code varchar(40), at timestamptz, amount numeric(12,2), body text);
INSERT INTO big SELECT g, md5(g::text), '2026-01-01'::timestamptz + g * interval '1 second',
  (g % 100000) / 100.0, repeat(md5(g::text), 7) || substr(md5((g+1)::text), 1, 4)
  FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE big;
SQL
cat >"$work/pg.toml" <<TOML
environment = "bench"
[database]
url = "postgres://postgres@127.0.0.1:5432/dg_bench"
[state]
dir = "$work/pg-state"
TOML
measure pg-preserve "$bin" preserve --table big --json --config "$work/pg.toml"
id=$(grep -o '"id": "[0-9A-Z]*"' "$work/out" | head -1 | cut -d'"' -f4)
measure pg_dump pg_dump -h 127.0.0.1 -U postgres -Fc -t big -f "$work/big.dump" dg_bench
psql -q -h 127.0.0.1 -U postgres dg_bench -c "TRUNCATE big"
measure pg-restore "$bin" restore --snapshot "$id" --json --config "$work/pg.toml"
psql -q -h 127.0.0.1 -U postgres dg_bench -c "TRUNCATE big"
measure pg_restore pg_restore -h 127.0.0.1 -U postgres --data-only -d dg_bench "$work/big.dump"
report postgres pg-preserve pg_dump
report postgres pg-restore pg_restore
fi

# MariaDB
if [[ -z $ONLY || $ONLY == mariadb ]]; then
mysql -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS dg_bench; CREATE DATABASE dg_bench"
mysql -h 127.0.0.1 -uroot dg_bench <<SQL
CREATE TABLE big (id bigint PRIMARY KEY, code varchar(40), at datetime(6), amount decimal(12,2), body text);
SET SESSION max_recursive_iterations = 100000000;
INSERT INTO big WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $ROWS)
  SELECT n, MD5(n), TIMESTAMPADD(SECOND, n, '2026-01-01'), (n % 100000) / 100.0,
         CONCAT(REPEAT(MD5(n), 6), LEFT(MD5(n + 1), 8)) FROM seq;
SQL
cat >"$work/my.toml" <<TOML
environment = "bench"
[database]
url = "mysql://root@127.0.0.1:3306/dg_bench"
[state]
dir = "$work/my-state"
TOML
measure my-preserve "$bin" preserve --table big --json --config "$work/my.toml"
id=$(grep -o '"id": "[0-9A-Z]*"' "$work/out" | head -1 | cut -d'"' -f4)
measure mysqldump mysqldump -h 127.0.0.1 -uroot --single-transaction --no-create-info --result-file="$work/big.sql" dg_bench big
mysql -h 127.0.0.1 -uroot dg_bench -e "TRUNCATE big"
measure my-restore "$bin" restore --snapshot "$id" --json --config "$work/my.toml"
mysql -h 127.0.0.1 -uroot dg_bench -e "TRUNCATE big"
measure mysql-import bash -c "mysql -h 127.0.0.1 -uroot dg_bench < '$work/big.sql'"
report mariadb my-preserve mysqldump
report mariadb my-restore mysql-import
fi
