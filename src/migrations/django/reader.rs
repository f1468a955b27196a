//! Reads one Django migration file: parses it with ruff's Python parser and
//! extracts the `Migration` class attributes (dependencies, operations,
//! replaces, run_before, initial) as evaluated values. Never executes code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ruff_python_ast::{Expr, PySourceType, Stmt, StmtClassDef};

use super::super::Problem;
use super::super::depth::{MAX_DEPTH, too_deep};
use super::nesting::{self, Tree};
use super::value::PYTHON_LEVELS;
use super::value::{Call, EvalError, Evaluator, LineIndex, Value};

pub(crate) type Key = (String, String);

/// A statically read migration module.
#[derive(Debug, Clone)]
pub(crate) struct MigrationFile {
    pub app: String,
    pub name: String,
    pub path: PathBuf,
    pub dependencies: Vec<Key>,
    pub replaces: Vec<Key>,
    pub run_before: Vec<Key>,
    pub initial: bool,
    pub operations: Vec<OpEntry>,
}

impl MigrationFile {
    pub fn key(&self) -> Key {
        (self.app.clone(), self.name.clone())
    }
}

/// One element of `operations`.
#[derive(Debug, Clone)]
pub(crate) enum OpEntry {
    Call(Call),
    /// Kept so the migration still shows an opaque operation for it.
    Unreadable {
        line: usize,
        message: String,
    },
}

/// Reads and parses `path`. A file that cannot be used at all is a `Problem`.
pub(crate) fn read_migration(
    path: &Path,
    app: &str,
    name: &str,
    auth_user_model: &str,
) -> Result<MigrationFile, Problem> {
    let bytes = std::fs::read(path).map_err(|e| Problem {
        file: path.to_path_buf(),
        line: 0,
        message: format!("cannot read migration: {e}"),
    })?;
    parse_migration(&bytes, path, app, name, auth_user_model)
}

pub(crate) fn parse_migration(
    bytes: &[u8],
    path: &Path,
    app: &str,
    name: &str,
    auth_user_model: &str,
) -> Result<MigrationFile, Problem> {
    let problem = |line: usize, message: String| Problem {
        file: path.to_path_buf(),
        line,
        message,
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let source = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        problem(line, format!("not valid UTF-8: {e}"))
    })?;
    let lines = LineIndex::new(source);
    // Measured before parsing: what nests too deep is never built.
    nesting::check(source)
        .map_err(|deep| problem(lines.line(deep.offset), too_deep(deep.depth, PYTHON_LEVELS)))?;
    let parsed = ruff_python_parser::parse_unchecked_source(source, PySourceType::Python);
    let syntax_error = parsed.errors().first().map(|e| {
        problem(
            lines.line(e.location.start().to_usize()),
            format!("Python syntax error: {}", e.error),
        )
    });
    // Dropped without recursion on every path from here, the error's included.
    let tree = Tree(parsed.into_syntax());
    if let Some(error) = syntax_error {
        return Err(error);
    }
    let body = &tree.0.body;

    let mut ev = Evaluator {
        lines: &lines,
        consts: HashMap::new(),
        imports: HashMap::new(),
        auth_user_model,
    };
    let mut class: Option<&StmtClassDef> = None;
    for stmt in body {
        match stmt {
            Stmt::Import(imp) => {
                for alias in &imp.names {
                    if let Some(asname) = &alias.asname {
                        ev.imports
                            .insert(asname.to_string(), alias.name.to_string());
                    }
                    // `import a.b` binds `a`, which already is its own path.
                }
            }
            Stmt::ImportFrom(imp) => {
                let module = imp.module.as_ref().map(|m| m.as_str()).unwrap_or("");
                // Relative imports resolve against `<app>.migrations`.
                let base = match imp.level {
                    0 => module.to_string(),
                    level => {
                        let mut pkg = vec![app, "migrations"];
                        pkg.truncate(pkg.len().saturating_sub(level as usize - 1));
                        let mut base = pkg.join(".");
                        if !module.is_empty() {
                            if !base.is_empty() {
                                base.push('.');
                            }
                            base.push_str(module);
                        }
                        base
                    }
                };
                for alias in &imp.names {
                    let local = alias.asname.as_ref().unwrap_or(&alias.name).to_string();
                    let full = if base.is_empty() {
                        alias.name.to_string()
                    } else {
                        format!("{base}.{}", alias.name)
                    };
                    ev.imports.insert(local, full);
                }
            }
            Stmt::Assign(assign) if class.is_none() => {
                if let [Expr::Name(target)] = assign.targets.as_slice() {
                    // Only literals are remembered; anything else stays a
                    // plain name and fails where a literal is required.
                    match ev.eval(&assign.value) {
                        Ok(v) => {
                            let depth = v.depth();
                            ev.consts.insert(target.id.to_string(), (v, depth))
                        }
                        Err(_) => ev.consts.remove(target.id.as_str()),
                    };
                }
            }
            Stmt::ClassDef(c) if c.name.as_str() == "Migration" => class = Some(c),
            _ => {}
        }
    }
    let Some(class) = class else {
        return Err(problem(0, "no `class Migration` in migration file".into()));
    };

    let mut mig = MigrationFile {
        app: app.to_string(),
        name: name.to_string(),
        path: path.to_path_buf(),
        dependencies: Vec::new(),
        replaces: Vec::new(),
        run_before: Vec::new(),
        initial: false,
        operations: Vec::new(),
    };
    for stmt in &class.body {
        let (target, value) = match stmt {
            Stmt::Assign(a) => match a.targets.as_slice() {
                [Expr::Name(t)] => (t.id.as_str(), &*a.value),
                _ => continue,
            },
            Stmt::AnnAssign(a) => match (&*a.target, &a.value) {
                (Expr::Name(t), Some(v)) => (t.id.as_str(), &**v),
                _ => continue,
            },
            _ => continue,
        };
        let to_problem = |e: EvalError| problem(e.line, format!("{target}: {}", e.message));
        match target {
            "dependencies" => mig.dependencies = key_list(&ev, value, 1).map_err(to_problem)?,
            "replaces" => mig.replaces = key_list(&ev, value, 1).map_err(to_problem)?,
            "run_before" => mig.run_before = key_list(&ev, value, 1).map_err(to_problem)?,
            "initial" => {
                mig.initial = match ev.eval(value).map_err(to_problem)? {
                    Value::Bool(b) => b,
                    Value::None => false,
                    _ => return Err(problem(lines.line_of(value), "initial: not a bool".into())),
                }
            }
            "operations" => mig.operations = operations(&ev, value),
            _ => {}
        }
    }
    Ok(mig)
}

/// `[('app', 'name'), ...]`, element by element so errors carry their line;
/// `expr` is `depth` levels below its statement.
fn key_list(ev: &Evaluator, expr: &Expr, depth: usize) -> Result<Vec<Key>, EvalError> {
    if depth > MAX_DEPTH {
        return Err(EvalError {
            line: ev.lines.line_of(expr),
            message: too_deep(depth, PYTHON_LEVELS),
        });
    }
    let elts = match resolve_const(ev, expr) {
        Some(Value::List(v) | Value::Tuple(v)) => {
            return v
                .iter()
                .map(|v| {
                    as_key(v).ok_or_else(|| EvalError {
                        line: ev.lines.line_of(expr),
                        message: "expected ('app_label', 'migration_name') pairs".into(),
                    })
                })
                .collect();
        }
        _ => match expr {
            Expr::List(l) => &l.elts,
            Expr::Tuple(t) => &t.elts,
            // `[...] + [...]`, as projects build optional dependencies.
            Expr::BinOp(op) if op.op == ruff_python_ast::Operator::Add => {
                let mut keys = key_list(ev, &op.left, depth + 1)?;
                keys.extend(key_list(ev, &op.right, depth + 1)?);
                return Ok(keys);
            }
            // `[...] if settings.X else []`: which branch runs depends on settings
            // we cannot see. Both branches' dependencies only order migrations, so
            // the union is safe: a dependency on an app not in the project is
            // tolerated like any external app.
            Expr::If(cond) => {
                let mut keys = key_list(ev, &cond.body, depth + 1)?;
                keys.extend(key_list(ev, &cond.orelse, depth + 1)?);
                return Ok(keys);
            }
            other => {
                return Err(EvalError {
                    line: ev.lines.line_of(other),
                    message: "expected a literal list of ('app_label', 'migration_name') pairs"
                        .into(),
                });
            }
        },
    };
    let mut keys = Vec::with_capacity(elts.len());
    for e in elts {
        let v = ev.eval_at(e, depth + 1)?;
        if let Some(key) = as_key(&v) {
            keys.push(key);
        } else if matches!(&v, Value::Call(call) if call.short_name() == "swappable_dependency") {
            // `swappable_dependency(some_settings.X_MODEL)`: a swappable model
            // whose setting we cannot read (only settings.AUTH_USER_MODEL is
            // configured). It only orders this migration after that app's first
            // one; leaving it out loses no data at risk.
            continue;
        } else {
            return Err(EvalError {
                line: ev.lines.line_of(e),
                message: "expected an ('app_label', 'migration_name') pair".into(),
            });
        }
    }
    Ok(keys)
}

fn resolve_const<'a>(ev: &'a Evaluator, expr: &Expr) -> Option<&'a Value> {
    match expr {
        Expr::Name(n) => ev.consts.get(n.id.as_str()).map(|(v, _)| v),
        _ => None,
    }
}

fn as_key(v: &Value) -> Option<Key> {
    match v.as_seq()? {
        [Value::Str(a), Value::Str(b)] => Some((a.clone(), b.clone())),
        _ => None,
    }
}

/// Each element separately: one unreadable operation must not hide the rest.
fn operations(ev: &Evaluator, expr: &Expr) -> Vec<OpEntry> {
    let unreadable = |line: usize, message: String| OpEntry::Unreadable { line, message };
    let elts = match expr {
        Expr::List(l) => &l.elts,
        Expr::Tuple(t) => &t.elts,
        other => {
            return match ev.eval(other) {
                Ok(Value::List(v) | Value::Tuple(v)) => v
                    .into_iter()
                    .map(|v| match v {
                        Value::Call(c) => OpEntry::Call(c),
                        _ => unreadable(
                            ev.lines.line_of(other),
                            "operations: element is not an operation call".into(),
                        ),
                    })
                    .collect(),
                _ => vec![unreadable(
                    ev.lines.line_of(other),
                    "operations: not a literal list of operations; cannot tell what this migration does"
                        .into(),
                )],
            };
        }
    };
    elts.iter()
        .map(|e| match ev.eval(e) {
            Ok(Value::Call(c)) => OpEntry::Call(c),
            Ok(_) => unreadable(
                ev.lines.line_of(e),
                "operations: element is not an operation call".into(),
            ),
            Err(err) => unreadable(err.line, format!("operations: {}", err.message)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::depth::test_stack::{WORKER_STACK, on_stack};

    fn parse(src: &str) -> Result<MigrationFile, Problem> {
        parse_with(src, "auth.User")
    }

    fn parse_with(src: &str, user: &str) -> Result<MigrationFile, Problem> {
        parse_migration(
            src.as_bytes(),
            Path::new("shop/migrations/0002_x.py"),
            "shop",
            "0002_x",
            user,
        )
    }

    fn ok(src: &str) -> MigrationFile {
        parse(src).unwrap_or_else(|p| panic!("{p:?}"))
    }

    fn call(m: &MigrationFile, i: usize) -> &Call {
        match &m.operations[i] {
            OpEntry::Call(c) => c,
            other => panic!("operation {i} unreadable: {other:?}"),
        }
    }

    fn key(a: &str, n: &str) -> Key {
        (a.to_string(), n.to_string())
    }

    const GENERATED: &str = r#"# Generated by Django 5.2.19 on 2026-11-25 14:14

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('catalog', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='Product',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('price', models.DecimalField(decimal_places=2, default=-1.5, max_digits=10)),
                ('category', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to='catalog.category')),
                ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'db_table': 'legacy_' 'products',
                'managed': True,
            },
        ),
        migrations.RemoveField(
            model_name='product',
            name='legacy_sku',
        ),
    ]
"#;

    #[test]
    fn reads_makemigrations_output() {
        let m = ok(GENERATED);
        assert!(m.initial);
        assert_eq!(
            m.dependencies,
            [key("catalog", "0001_initial"), key("auth", "__first__")]
        );
        assert_eq!(m.operations.len(), 2);
        let create = call(&m, 0);
        assert_eq!(create.func, "django.db.migrations.CreateModel");
        assert_eq!(create.short_name(), "CreateModel");
        assert_eq!(create.line, 18);
        assert_eq!(create.str_arg(0, "name"), Some("Product"));
        let options = create.arg(2, "options");
        assert_eq!(
            options.and_then(|o| o.dict_get("db_table")),
            Some(&Value::Str("legacy_products".into()))
        );
        let fields = create
            .arg(1, "fields")
            .and_then(Value::as_seq)
            .unwrap_or(&[]);
        let Some([Value::Str(_), Value::Call(price)]) = fields.get(1).and_then(Value::as_seq)
        else {
            panic!("{fields:?}")
        };
        assert_eq!(price.func, "django.db.models.DecimalField");
        assert_eq!(price.kwarg("default"), Some(&Value::Number("-1.5".into())));
        let Some([_, Value::Call(fk)]) = fields.get(2).and_then(Value::as_seq) else {
            panic!()
        };
        assert_eq!(
            fk.kwarg("on_delete"),
            Some(&Value::Name("django.db.models.deletion.CASCADE".into()))
        );
        let Some([_, Value::Call(owner)]) = fields.get(3).and_then(Value::as_seq) else {
            panic!()
        };
        assert_eq!(owner.kwarg("to"), Some(&Value::Str("auth.User".into())));
        assert_eq!(call(&m, 1).line, 31);
    }

    #[test]
    fn custom_user_model() {
        let m = parse_with(GENERATED, "accounts.Member").unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(m.dependencies[1], key("accounts", "__first__"));
    }

    #[test]
    fn literal_subset() {
        let m = ok(r#"
from django.db import migrations
class Migration(migrations.Migration):
    replaces = [('shop', '0001_initial'), ('shop', '0002_x')]
    run_before = (('other', '0001_initial'),)
    operations = [
        migrations.Thing(1, -2, +3, 1.5, 2j, True, False, None, b'by' b'tes', {1, 2}, (1,), [],
                         {'k': ('v',)}, x=lambda apps, schema_editor: None),
    ]
"#);
        assert_eq!(
            m.replaces,
            [key("shop", "0001_initial"), key("shop", "0002_x")]
        );
        assert_eq!(m.run_before, [key("other", "0001_initial")]);
        let c = call(&m, 0);
        assert_eq!(c.args.len(), 13);
        assert_eq!(c.args[1], Value::Number("-2".into()));
        assert_eq!(c.args[2], Value::Number("3".into()));
        assert_eq!(c.args[8], Value::Bytes(b"bytes".to_vec()));
        assert_eq!(c.kwarg("x"), Some(&Value::Name("<lambda>".into())));
        assert!(!m.initial);
    }

    #[test]
    fn names_are_qualified_through_imports() {
        let m = ok(r#"
from django.db import migrations as m
from django.db.migrations import RunSQL
from ..operations import BackfillThing
from .helpers import forwards
import myapp.ops as ops

FORWARD = """
DROP TABLE shop_old;
"""
DEPS = [('shop', '0001_initial')]

class Migration(m.Migration):
    dependencies = DEPS
    operations = [
        RunSQL(FORWARD),
        BackfillThing(),
        ops.Custom(),
        m.RunPython(forwards),
    ]
"#);
        assert_eq!(m.dependencies, [key("shop", "0001_initial")]);
        assert_eq!(call(&m, 0).func, "django.db.migrations.RunSQL");
        assert_eq!(
            call(&m, 0).args[0],
            Value::Str("\nDROP TABLE shop_old;\n".into())
        );
        assert_eq!(call(&m, 1).func, "shop.operations.BackfillThing");
        assert_eq!(call(&m, 2).func, "myapp.ops.Custom");
        assert_eq!(call(&m, 3).func, "django.db.migrations.RunPython");
        assert_eq!(
            call(&m, 3).args[0],
            Value::Name("shop.migrations.helpers.forwards".into())
        );
    }

    #[test]
    fn dynamic_operations_are_unreadable_with_their_line() {
        let m = ok(
            "from django.db import migrations\n\nclass Migration(migrations.Migration):\n    operations = make_ops()\n",
        );
        assert!(matches!(
            m.operations.as_slice(),
            [OpEntry::Unreadable { line: 4, .. }]
        ));

        let m = ok(
            "from django.db import migrations\nclass Migration(migrations.Migration):\n    operations = [\n        migrations.RunPython(f),\n        *[migrations.RemoveField('a', n) for n in NAMES],\n    ]\n",
        );
        assert!(matches!(m.operations[0], OpEntry::Call(_)));
        let OpEntry::Unreadable { line, message } = &m.operations[1] else {
            panic!("{:?}", m.operations[1])
        };
        assert_eq!(*line, 5);
        assert!(message.contains("unpacking"), "{message}");

        let m = ok(
            "from django.db import migrations\nclass Migration(migrations.Migration):\n    operations = [migrations.RemoveField('a', n) for n in NAMES]\n",
        );
        let [OpEntry::Unreadable { line: 3, message }] = m.operations.as_slice() else {
            panic!("{:?}", m.operations)
        };
        assert!(message.contains("not a literal list"), "{message}");

        let m = ok(
            "from django.db import migrations, models\nclass Migration(migrations.Migration):\n    operations = [\n        migrations.AddField('a', 'b', models.CharField(\n            default=f'{X}'))\n    ]\n",
        );
        let [OpEntry::Unreadable { line: 5, message }] = m.operations.as_slice() else {
            panic!("{:?}", m.operations)
        };
        assert!(message.contains("f-string"), "{message}");
    }

    #[test]
    fn conditional_dependencies_are_a_problem() {
        let p = parse(
            "class Migration:\n    dependencies = [\n        ('a', '0001'),\n        ('b', X) if Y else None,\n    ]\n",
        );
        assert_eq!(p.map(|_| ()).map_err(|p| p.line), Err(4));
        let p = parse("class Migration:\n    dependencies = compute()\n");
        assert_eq!(p.map(|_| ()).map_err(|p| p.line), Err(2));
    }

    #[test]
    fn optional_and_unreadable_swappable_dependencies_are_tolerated() {
        // django-allauth builds dependencies from a setting; django-oauth-toolkit
        // depends on swappable models of its own settings object.
        let m = parse(
            "from django.db import migrations\nfrom oauth2_provider.settings import oauth2_settings\n\nclass Migration(migrations.Migration):\n    dependencies = (\n        [('sites', '0001_initial')] if app_settings.SITES_ENABLED else []\n    ) + [\n        ('socialaccount', '0001_initial'),\n        migrations.swappable_dependency(oauth2_settings.ACCESS_TOKEN_MODEL),\n    ]\n",
        )
        .unwrap_or_else(|p| panic!("{}: {}", p.line, p.message));
        assert_eq!(
            m.dependencies,
            [
                key("sites", "0001_initial"),
                key("socialaccount", "0001_initial")
            ]
        );
    }

    #[test]
    fn syntax_error_has_its_line() {
        let p = parse(
            "from django.db import migrations\n\nclass Migration(migrations.Migration):\n    operations = [\n        migrations.RemoveField(model_name='x' name='y'),\n    ]\n",
        );
        let p = p.err().unwrap_or_else(|| panic!("parsed"));
        assert_eq!(p.line, 5);
        assert!(p.message.contains("syntax error"), "{}", p.message);
        assert_eq!(p.file, Path::new("shop/migrations/0002_x.py"));
    }

    #[test]
    fn non_utf8_has_its_line() {
        let mut src = b"# first\n# second\n# caf".to_vec();
        src.push(0xe9);
        src.extend_from_slice(b"\nclass Migration: pass\n");
        let p = parse_migration(&src, Path::new("x.py"), "shop", "x", "auth.User");
        assert_eq!(p.map(|_| ()).map_err(|p| p.line), Err(3));
    }

    #[test]
    fn bom_is_accepted() {
        let src = "\u{feff}class Migration:\n    initial = True\n";
        assert!(ok(src).initial);
    }

    #[test]
    fn missing_class_is_a_problem() {
        let p = parse(
            "from django.db import migrations\nclass NotAMigration(migrations.Migration):\n    pass\n",
        );
        assert!(p.is_err_and(|p| p.message.contains("no `class Migration`")));
    }

    fn module_with(statement: &str) -> String {
        format!(
            "from django.db import migrations\n\n{statement}\nclass Migration(migrations.Migration):\n    operations = []\n"
        )
    }

    #[test]
    fn every_shape_of_deep_nesting_is_a_problem_of_its_file_not_a_crash() {
        // Reported: 4,000 `-` before a `1`, and 2,000 nested `[`, each aborted the
        // daemon. Every other way of nesting too.
        for (name, deep) in super::super::nesting::tests::shapes(4_000) {
            let src = module_with(&deep);
            let problem = on_stack(WORKER_STACK, move || parse(&src).err());
            let Some(problem) = problem else {
                panic!("{name}: read as a migration")
            };
            assert!(
                problem.message.contains("levels deep") && problem.message.contains("at most 200"),
                "{name}: {problem:?}"
            );
            if deep.lines().count() == 1 {
                assert_eq!(problem.line, 3, "{name}: {problem:?}");
            } else {
                assert!(problem.line > 3, "{name}: {problem:?}");
            }
            assert_eq!(problem.file, Path::new("shop/migrations/0002_x.py"));
        }
    }

    #[test]
    fn the_deepest_file_let_through_is_read_on_an_eighth_of_the_analysis_stack() {
        for (name, _) in super::super::nesting::tests::shapes(1) {
            let src = module_with(&super::super::nesting::tests::deepest_allowed(name));
            let read = on_stack(
                crate::migrations::depth::ANALYSIS_STACK_BYTES / 8,
                move || parse(&src).map(|m| m.operations.len()),
            );
            // Some shapes are not valid Python: a syntax error is fine, a crash is not.
            if let Err(problem) = read {
                assert!(
                    problem.message.contains("syntax error"),
                    "{name}: {problem:?}"
                );
            }
        }
    }

    #[test]
    fn a_tree_deeper_than_its_tokens_show_is_still_no_crash() {
        // The parser's error recovery reads the `'` after `{` as the f-string's end,
        // while the lexer alone reads a string to the end of the line: what follows
        // nests in the tree but not in the tokens the check counts.
        let src = format!(
            "X = f'{{'\n}}{}1{}'\n",
            "[".repeat(5_000),
            "]".repeat(5_000)
        );
        // Should the check learn to see this, this test needs another such file.
        assert_eq!(super::super::nesting::check(&src), Ok(()));
        let read = on_stack(256 * 1024, move || parse(&src).err());
        let Some(problem) = read else {
            panic!("read as a migration")
        };
        assert!(problem.message.contains("syntax error"), "{problem:?}");
    }

    #[test]
    fn values_nested_through_names_stay_within_the_limit() {
        // Every line is shallow; the value built through the names is not.
        let mut src = String::from("from django.db import migrations\nA0 = 'DROP TABLE t'\n");
        for i in 1..=300 {
            src.push_str(&format!("A{i} = [A{}]\n", i - 1));
        }
        src.push_str("class Migration(migrations.Migration):\n    operations = [\n        migrations.RunSQL(A199),\n        migrations.RunSQL(A300),\n    ]\n");
        let m = on_stack(WORKER_STACK, move || parse(&src));
        let m = m.unwrap_or_else(|p| panic!("{p:?}"));
        let OpEntry::Unreadable { line, message } = &m.operations[0] else {
            panic!("{:?}", m.operations[0])
        };
        assert_eq!(*line, 305);
        assert!(message.contains("through the name A199"), "{message}");
        // A201 could not be built: from there on the names stay names.
        let call = Value::Call(call(&m, 1).clone());
        assert!(call.depth() <= MAX_DEPTH, "{}", call.depth());
    }

    #[test]
    fn defaults_when_attributes_are_absent() {
        let m = ok(
            "from django.db import migrations\nclass Migration(migrations.Migration):\n    pass\n",
        );
        assert!(m.dependencies.is_empty() && m.operations.is_empty() && m.replaces.is_empty());
    }
}
