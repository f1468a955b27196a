#!/usr/bin/env bash
# Benchmark: `dropguard scan --all` over a generated Django project of 5,000 migration
# files (50 apps x 100), beside Django's own MigrationLoader on the same files.
# Needs: hyperfine (apt-get install hyperfine), a Python with Django
# (PYTHON, default target/test-venv/bin/python, created by the tests or .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-target/test-venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --locked --bin dropguard
python3 benches/gen_migrations.py "$work/project" 50 100
cat > "$work/dropguard.toml" <<TOML
environment = "bench"
[database]
url = "sqlite://$work/app.db"
[django]
project_dir = "$work/project"
[state]
dir = "$work/state"
TOML
bin=$PWD/target/release/dropguard
peer=$PWD/benches/load_with_django.py
"$bin" scan --all --json --config "$work/dropguard.toml" | "$PYTHON" -c 'import json,sys; p=json.load(sys.stdin); print(len(p["migrations"]), "migrations with operations,", len(p["problems"]), "problems")'
(cd "$work/project" && "$OLDPWD/$PYTHON" "$peer")
hyperfine --warmup 2 --runs 10 --export-markdown "$work/result.md" \
  -n "dropguard scan --all" "$bin scan --all --json --config $work/dropguard.toml > /dev/null" \
  -n "django MigrationLoader + project_state" "cd $work/project && $OLDPWD/$PYTHON $peer > /dev/null"
cat "$work/result.md"
