//! Django migrations end to end: discovery, reading, graph resolution and
//! state replay, producing the public `Analysis`.

mod discover;

pub(crate) use discover::skip_dir;
mod graph;
mod nesting;
mod reader;
mod state;
mod value;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{Analysis, Error, MigrationId, MigrationPlan, MissingDependency, Options, Problem};
use discover::FoundFile;
use reader::MigrationFile;

pub(crate) fn analyse(
    project_dir: &Path,
    applied: &BTreeSet<(String, String)>,
    opts: &Options,
) -> Result<Analysis, Error> {
    let found = discover::discover(project_dir)?;
    let mut problems = found.problems;
    let mut migrations = Vec::with_capacity(found.files.len());
    let mut unreadable = BTreeMap::new();
    for (file, result) in found
        .files
        .iter()
        .zip(read_all(&found.files, &opts.auth_user_model))
    {
        match result {
            Ok(m) => migrations.push(m),
            Err(p) => {
                unreadable.insert((file.app.clone(), file.name.clone()), file.path.clone());
                problems.push(p);
            }
        }
    }

    let resolved = graph::resolve(&graph::GraphInput {
        migrations: &migrations,
        project_apps: &found.apps,
        unreadable: &unreadable,
        applied,
    })
    .map_err(|e| match e {
        graph::GraphError::Cycle(keys) => Error::Cycle(
            keys.into_iter()
                .map(|(a, n)| MigrationId::new(a, n))
                .collect(),
        ),
        graph::GraphError::Missing(pairs) => Error::MissingDependencies(
            pairs
                .into_iter()
                .map(|(m, d)| MissingDependency {
                    migration: MigrationId::new(m.0, m.1),
                    dependency: MigrationId::new(d.0, d.1),
                })
                .collect(),
        ),
    })?;
    problems.extend(resolved.problems);

    let mut replayer = state::Replayer::new(opts.engine);
    let mut plans = Vec::with_capacity(resolved.plan.len());
    for entry in resolved.plan {
        let Some(m) = migrations.get(entry.index) else {
            continue;
        };
        let id = MigrationId::new(m.app.clone(), m.name.clone());
        let (operations, op_problems) = replayer.apply(m, &id);
        problems.extend(op_problems);
        plans.push(MigrationPlan {
            id,
            file: m.path.clone(),
            previous: Some(entry.previous),
            applied: entry.applied,
            replaces: entry
                .replaces
                .into_iter()
                .map(|(a, n)| MigrationId::new(a, n))
                .collect(),
            operations,
        });
    }
    Ok(Analysis {
        migrations: plans,
        problems,
    })
}

/// One migration file's bytes through the same steps `analyse` takes for a file
/// (parse, then replay on an empty project state), without the file system: the
/// entry point of the fuzz target.
pub(crate) fn analyse_file(
    bytes: &[u8],
    opts: &Options,
) -> Result<(Vec<super::Operation>, Vec<Problem>), Problem> {
    let path = Path::new("fuzz/0001_input.py");
    let m = reader::parse_migration(bytes, path, "fuzz", "0001_input", &opts.auth_user_model)?;
    let id = MigrationId::new(m.app.clone(), m.name.clone());
    Ok(state::Replayer::new(opts.engine).apply(&m, &id))
}

/// Reads every file, spread over the available cores: parsing dominates the
/// run time and files are independent. Called on the analysis stack; the helper
/// threads get one of the same size.
fn read_all(files: &[FoundFile], auth_user_model: &str) -> Vec<Result<MigrationFile, Problem>> {
    let read = |f: &FoundFile| reader::read_migration(&f.path, &f.app, &f.name, auth_user_model);
    let read_chunk = |c: &[FoundFile]| c.iter().map(read).collect::<Vec<_>>();
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(8);
    if threads < 2 || files.len() < 64 {
        return read_chunk(files);
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|c| {
                std::thread::Builder::new()
                    .name("migrations-read".to_string())
                    .stack_size(super::depth::ANALYSIS_STACK_BYTES)
                    .spawn_scoped(s, move || read_chunk(c))
            })
            .collect();
        let mut out = Vec::with_capacity(files.len());
        for (h, c) in handles.into_iter().zip(files.chunks(chunk)) {
            // No thread to be had: this one has the same stack.
            let joined = match h {
                Ok(h) => h.join(),
                Err(_) => Ok(read_chunk(c)),
            };
            match joined {
                Ok(results) => out.extend(results),
                // A panicking parser thread must not take the analysis down:
                // its files are reported instead.
                Err(_) => out.extend(c.iter().map(|f| {
                    Err(Problem {
                        file: f.path.clone(),
                        line: 0,
                        message: "internal error while reading this file".to_string(),
                    })
                })),
            }
        }
        out
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Temp Django projects with migrations in makemigrations' style.

    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::super::{Analysis, Engine, Error, Operation, Options, analyse_django};

    pub struct Project {
        pub dir: tempfile::TempDir,
    }

    pub const HEADER: &str = "# Generated by Django 5.2.19 on 2026-01-01 00:00\n\nimport django.db.models.deletion\nfrom django.conf import settings\nfrom django.db import migrations, models\n\n\n";

    /// A migration module as makemigrations writes it; `ops` is the
    /// operations' text, already indented by eight spaces.
    pub fn migration(deps: &[(&str, &str)], ops: &str) -> String {
        let deps: String = deps
            .iter()
            .map(|(a, n)| {
                if *n == "swappable" {
                    "        migrations.swappable_dependency(settings.AUTH_USER_MODEL),\n"
                        .to_string()
                } else {
                    format!("        ('{a}', '{n}'),\n")
                }
            })
            .collect();
        format!(
            "{HEADER}class Migration(migrations.Migration):\n\n    dependencies = [\n{deps}    ]\n\n    operations = [\n{ops}    ]\n"
        )
    }

    impl Project {
        pub fn new() -> Self {
            Project {
                dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            }
        }

        pub fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Writes `<app>/migrations/<name>.py` (and the package's __init__.py).
        pub fn add(&self, app: &str, name: &str, text: &str) -> PathBuf {
            self.write_bytes(&format!("{app}/migrations/__init__.py"), b"");
            self.write_bytes(&format!("{app}/migrations/{name}.py"), text.as_bytes())
        }

        pub fn write_bytes(&self, rel: &str, bytes: &[u8]) -> PathBuf {
            let path = self.dir.path().join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
            }
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write: {e}"));
            path
        }

        pub fn try_analyse(
            &self,
            engine: Engine,
            applied: &[(&str, &str)],
        ) -> Result<Analysis, Error> {
            let applied: BTreeSet<(String, String)> = applied
                .iter()
                .map(|(a, n)| (a.to_string(), n.to_string()))
                .collect();
            analyse_django(self.path(), &applied, &Options::new(engine))
        }

        pub fn analyse(&self) -> Analysis {
            self.analyse_on(Engine::Postgres)
        }

        pub fn analyse_on(&self, engine: Engine) -> Analysis {
            self.try_analyse(engine, &[])
                .unwrap_or_else(|e| panic!("{e}"))
        }
    }

    /// One line per operation: "kind table [cols] pk=[..] -> new | source @line".
    pub fn show(op: &Operation) -> String {
        let kind = serde_json::to_value(op.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut s = format!("{kind} {}", op.table.as_deref().unwrap_or("-"));
        if !op.columns.is_empty() {
            s.push_str(&format!(" {:?}", op.columns));
        }
        if !op.primary_key.is_empty() {
            s.push_str(&format!(" pk={:?}", op.primary_key));
        }
        if let Some(n) = &op.new_name {
            s.push_str(&format!(" -> {n}"));
        }
        s.push_str(&format!(" | {}", op.source));
        s
    }

    /// Operations of migration "app.name", shown.
    pub fn ops(a: &Analysis, id: &str) -> Vec<String> {
        a.migrations
            .iter()
            .find(|m| m.id.to_string() == id)
            .unwrap_or_else(|| panic!("no migration {id}"))
            .operations
            .iter()
            .map(show)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Engine, Error, OpKind, Options, analyse_django};
    use super::testutil::{Project, migration, ops};

    const CREATE: &str = "        migrations.CreateModel(\n            name='Product',\n            fields=[\n                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),\n                ('sku', models.CharField(max_length=20)),\n            ],\n        ),\n";
    const REMOVE: &str = "        migrations.RemoveField(\n            model_name='product',\n            name='sku',\n        ),\n";

    #[test]
    fn discovery_rules() {
        let p = Project::new();
        p.add("shop", "0001_initial", &migration(&[], CREATE));
        p.add(
            "shop",
            "0002_remove",
            &migration(&[("shop", "0001_initial")], REMOVE),
        );
        // Not migrations: helpers, editor backups, other file types.
        p.write_bytes("shop/migrations/_helpers.py", b"x = (");
        p.write_bytes("shop/migrations/~0003_tmp.py", b"x = (");
        p.write_bytes("shop/migrations/README.md", b"");
        p.write_bytes(
            "shop/migrations/__pycache__/0001_initial.cpython-312.pyc",
            b"\0",
        );
        // Skipped trees.
        for dir in [
            ".venv/lib/site-packages/pkg",
            "venv/x",
            "node_modules/y",
            ".git/z",
            "build/lib/site-packages/w",
        ] {
            p.write_bytes(&format!("{dir}/migrations/__init__.py"), b"");
            p.write_bytes(&format!("{dir}/migrations/0001_initial.py"), b"x = (");
        }
        // A namespace package (no __init__.py) is an unmigrated app for Django.
        p.write_bytes("alembicish/migrations/env.py", b"x = (");
        let a = p.analyse();
        assert_eq!(a.problems, []);
        let ids: Vec<_> = a.migrations.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(ids, ["shop.0001_initial", "shop.0002_remove"]);
        assert_eq!(a.migrations[0].previous.as_deref(), Some("zero"));
        assert_eq!(
            ops(&a, "shop.0002_remove"),
            ["drop_column shop_product [\"sku\"] pk=[\"id\"] | RemoveField(product.sku)"]
        );
    }

    #[test]
    fn nested_apps_use_their_directory_name() {
        let p = Project::new();
        p.add("src/apps/shop", "0001_initial", &migration(&[], CREATE));
        p.add(
            "src/apps/billing",
            "0001_initial",
            &migration(&[("shop", "0001_initial")], ""),
        );
        let ids: Vec<_> = p
            .analyse()
            .migrations
            .iter()
            .map(|m| m.id.to_string())
            .collect();
        assert_eq!(ids, ["shop.0001_initial", "billing.0001_initial"]);
    }

    #[test]
    fn duplicate_app_labels_are_a_problem() {
        let p = Project::new();
        p.add("a/shop", "0001_initial", &migration(&[], CREATE));
        p.add("b/shop", "0001_initial", &migration(&[], CREATE));
        let a = p.analyse();
        assert_eq!(a.migrations.len(), 1);
        assert_eq!(a.problems.len(), 1);
        assert!(
            a.problems[0].message.contains("already provided"),
            "{:?}",
            a.problems
        );
    }

    #[test]
    fn broken_files_are_problems_and_the_rest_is_analysed() {
        let p = Project::new();
        p.add("shop", "0001_initial", &migration(&[], CREATE));
        let broken = migration(
            &[("shop", "0001_initial")],
            "        migrations.RemoveField(model_name='product' name='sku'),\n",
        );
        p.add("shop", "0002_broken", &broken);
        p.add(
            "shop",
            "0003_after",
            &migration(&[("shop", "0002_broken")], REMOVE),
        );
        let mut latin1 = migration(&[], "").into_bytes();
        latin1.splice(0..0, b"# caf\xe9\n".iter().copied());
        p.write_bytes("other/migrations/__init__.py", b"");
        p.write_bytes("other/migrations/0001_initial.py", &latin1);
        let dynamic = format!(
            "{}class Migration(migrations.Migration):\n    dependencies = [('shop', '0001_initial')]\n    operations = build_operations()\n",
            super::testutil::HEADER
        );
        p.add("third", "0001_initial", &dynamic);

        let a = p.analyse();
        let ids: Vec<_> = a.migrations.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(
            ids,
            ["shop.0001_initial", "shop.0003_after", "third.0001_initial"]
        );
        assert_eq!(
            ops(&a, "shop.0003_after"),
            ["drop_column shop_product [\"sku\"] pk=[\"id\"] | RemoveField(product.sku)"]
        );
        let third = &a.migrations[2].operations;
        assert_eq!(third.len(), 1);
        assert_eq!((third[0].kind, third[0].line), (OpKind::Opaque, 10));

        let problems: Vec<_> = a
            .problems
            .iter()
            .map(|p| {
                let rel = p
                    .file
                    .strip_prefix(p.file.ancestors().nth(3).unwrap_or(&p.file))
                    .unwrap_or(&p.file);
                (rel.to_string_lossy().into_owned(), p.line)
            })
            .collect();
        assert_eq!(
            problems,
            [
                ("other/migrations/0001_initial.py".to_string(), 1),
                ("shop/migrations/0002_broken.py".to_string(), 15),
                ("shop/migrations/0003_after.py".to_string(), 0),
                ("third/migrations/0001_initial.py".to_string(), 10),
            ]
        );
        assert!(a.problems[1].message.contains("syntax error"));
        assert!(a.problems[2].message.contains("shop.0002_broken"));
    }

    #[test]
    fn missing_dependency_fails_the_project_naming_both() {
        let p = Project::new();
        p.add("shop", "0001_initial", &migration(&[], CREATE));
        p.add(
            "shop",
            "0003_third",
            &migration(
                &[
                    ("shop", "0002_gone"),
                    ("auth", "0012_alter_user_first_name_max_length"),
                ],
                "",
            ),
        );
        let err = p.try_analyse(Engine::Postgres, &[]).err();
        let Some(Error::MissingDependencies(missing)) = err else {
            panic!("{err:?}")
        };
        assert_eq!(missing.len(), 1);
        assert_eq!(
            missing[0].to_string(),
            "shop.0003_third depends on shop.0002_gone"
        );
    }

    #[test]
    fn cycle_fails_the_project_naming_the_cycle() {
        let p = Project::new();
        p.add(
            "a",
            "0001_initial",
            &migration(&[("b", "0001_initial")], ""),
        );
        p.add(
            "b",
            "0001_initial",
            &migration(&[("a", "0001_initial")], ""),
        );
        let err = p.try_analyse(Engine::Postgres, &[]).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            msg,
            "circular dependency between migrations: a.0001_initial -> b.0001_initial -> a.0001_initial"
        );
    }

    #[test]
    fn project_dir_errors() {
        let p = Project::new();
        let file = p.write_bytes("file.txt", b"");
        let applied = Default::default();
        let opts = Options::new(Engine::Sqlite);
        assert!(matches!(
            analyse_django(&file, &applied, &opts),
            Err(Error::NotADirectory(_))
        ));
        assert!(matches!(
            analyse_django(&p.path().join("nope"), &applied, &opts),
            Err(Error::Io { .. })
        ));
        // An empty project is fine.
        assert_eq!(p.analyse().migrations, []);
    }

    #[test]
    fn applied_flags_and_pending_operations() {
        let p = Project::new();
        p.add("shop", "0001_initial", &migration(&[], CREATE));
        p.add(
            "shop",
            "0002_remove",
            &migration(&[("shop", "0001_initial")], REMOVE),
        );
        let a = p
            .try_analyse(
                Engine::Postgres,
                &[("shop", "0001_initial"), ("auth", "0001_initial")],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let flags: Vec<_> = a.migrations.iter().map(|m| m.applied).collect();
        assert_eq!(flags, [true, false]);
        assert_eq!(a.pending_operations().count(), 1);
    }

    /// Generates 50 apps x 100 migrations and times the whole analysis:
    /// `cargo test --release -- --ignored --nocapture five_thousand`.
    #[test]
    #[ignore]
    fn five_thousand_files() {
        let p = Project::new();
        let apps = 50;
        let per_app = 100;
        for a in 0..apps {
            let app = format!("app{a:02}");
            for i in 0..per_app {
                let name = format!("{:04}_step", i + 1);
                let mut deps = Vec::new();
                let prev = format!("{i:04}_step");
                if i > 0 {
                    deps.push((app.clone(), prev));
                }
                if a > 0 && i % 10 == 0 {
                    deps.push((format!("app{:02}", a - 1), format!("{:04}_step", i + 1)));
                }
                if i == 0 {
                    deps.push((
                        "auth".to_string(),
                        "0012_alter_user_first_name_max_length".to_string(),
                    ));
                }
                let deps: Vec<(&str, &str)> =
                    deps.iter().map(|(x, y)| (x.as_str(), y.as_str())).collect();
                let ops = match i % 4 {
                    0 => format!(
                        "        migrations.CreateModel(\n            name='Model{i}',\n            fields=[\n                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),\n                ('name', models.CharField(max_length=50)),\n                ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to=settings.AUTH_USER_MODEL)),\n                ('tags', models.ManyToManyField(to='{app}.model{i}')),\n            ],\n            options={{'ordering': ['name']}},\n        ),\n"
                    ),
                    1 => format!(
                        "        migrations.AddField(\n            model_name='model{}',\n            name='extra',\n            field=models.DecimalField(decimal_places=2, default=0, max_digits=10),\n        ),\n        migrations.AlterField(\n            model_name='model{}',\n            name='name',\n            field=models.CharField(max_length=100),\n        ),\n",
                        i - 1,
                        i - 1
                    ),
                    2 => format!(
                        "        migrations.RemoveField(\n            model_name='model{}',\n            name='extra',\n        ),\n        migrations.RemoveField(\n            model_name='model{}',\n            name='owner',\n        ),\n",
                        i - 2,
                        i - 2
                    ),
                    _ => format!(
                        "        migrations.DeleteModel(\n            name='Model{}',\n        ),\n",
                        i - 3
                    ),
                };
                p.add(&app, &name, &migration(&deps, &ops));
            }
        }
        let start = std::time::Instant::now();
        let a = p.analyse();
        let elapsed = start.elapsed();
        assert_eq!(a.migrations.len(), apps * per_app);
        assert_eq!(a.problems, []);
        let ops: usize = a.migrations.iter().map(|m| m.operations.len()).sum();
        // Per app: 25 x (2 drop_column) + 25 x (table + join table).
        assert_eq!(ops, apps * 25 * 4);
        println!(
            "analysed {} files ({ops} operations) in {elapsed:?}",
            apps * per_app
        );
    }
}
