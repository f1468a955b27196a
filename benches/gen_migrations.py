#!/usr/bin/env python3
"""Generate a Django project with APPS apps x PER_APP migrations for `scan` benchmarks.

    python3 benches/gen_migrations.py OUT_DIR [APPS] [PER_APP]

Each app's history looks like makemigrations output: an initial CreateModel of a few
models, then AddField / RemoveField / RenameField / AlterField / DeleteModel steps,
with cross-app ForeignKeys and ManyToManyFields, so that analysis has to replay real
state. The project also has settings, so Django's own MigrationLoader can load it
(the peer in benches/scan.sh).
"""

import sys
from pathlib import Path

out = Path(sys.argv[1])
apps = int(sys.argv[2]) if len(sys.argv) > 2 else 50
per_app = int(sys.argv[3]) if len(sys.argv) > 3 else 100

HEADER = "from django.db import migrations, models\nimport django.db.models.deletion\n\n\n"


def migration(deps, ops):
    dep_text = "".join(f"        ('{a}', '{n}'),\n" for a, n in deps)
    op_text = "".join(f"        {op},\n" for op in ops)
    return (
        HEADER
        + "class Migration(migrations.Migration):\n\n"
        + f"    dependencies = [\n{dep_text}    ]\n\n"
        + f"    operations = [\n{op_text}    ]\n"
    )


(out / "benchsite").mkdir(parents=True, exist_ok=True)
(out / "benchsite" / "__init__.py").write_text("")
app_names = [f"app{i:03d}" for i in range(apps)]
(out / "benchsite" / "settings.py").write_text(
    "SECRET_KEY = 'bench'\nINSTALLED_APPS = %r\n" % app_names
    + "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}\n"
    + "DEFAULT_AUTO_FIELD = 'django.db.models.BigAutoField'\nUSE_TZ = True\n"
)

for a, app in enumerate(app_names):
    mig_dir = out / app / "migrations"
    mig_dir.mkdir(parents=True, exist_ok=True)
    (out / app / "__init__.py").write_text("")
    (mig_dir / "__init__.py").write_text("")
    names = []
    models_alive = ["item", "order", "note"]
    fields = {m: [] for m in models_alive}
    ops = []
    for m in models_alive:
        ops.append(
            "migrations.CreateModel(name='%s', fields=[('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')), ('title', models.CharField(max_length=100))], options={'db_table': '%s_%s_tbl'})"
            % (m.capitalize(), app, m)
        )
    deps = [] if a == 0 else [(app_names[a - 1], "0001_initial")]
    name = "0001_initial"
    (mig_dir / f"{name}.py").write_text(migration(deps, ops))
    names.append(name)
    for n in range(2, per_app + 1):
        step = n % 6
        model = models_alive[n % len(models_alive)]
        f = f"f{n}"
        if step == 0:
            op = f"migrations.AddField(model_name='{model}', name='{f}', field=models.IntegerField(null=True, db_column='col_{n}'))"
            fields[model].append(f)
            slug = f"add_{model}_{f}"
        elif step == 1 and any(fields.values()):
            model = next(m for m in models_alive if fields[m])
            gone = fields[model].pop(0)
            op = f"migrations.RemoveField(model_name='{model}', name='{gone}')"
            slug = f"remove_{model}_{gone}"
        elif step == 2 and a > 0:
            op = f"migrations.AddField(model_name='{model}', name='{f}', field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, to='{app_names[a - 1]}.item'))"
            fields[model].append(f)
            slug = f"add_{model}_{f}"
        elif step == 3 and fields[model]:
            old = fields[model].pop()
            op = f"migrations.RenameField(model_name='{model}', old_name='{old}', new_name='{old}_r')"
            fields[model].append(f"{old}_r")
            slug = f"rename_{model}_{old}"
        elif step == 4:
            op = f"migrations.AddField(model_name='{model}', name='{f}', field=models.ManyToManyField(to='{app}.note'))"
            fields[model].append(f)
            slug = f"add_{model}_{f}"
        else:
            op = f"migrations.AlterField(model_name='{model}', name='title', field=models.CharField(max_length={100 + n}))"
            slug = f"alter_{model}_title"
        name = f"{n:04d}_{slug}"
        (mig_dir / f"{name}.py").write_text(migration([(app, names[-1])], [op]))
        names.append(name)

(out / "manage.py").write_text(
    "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'benchsite.settings')\n"
    "from django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n"
)
print(f"{apps * per_app} migrations in {out}")
