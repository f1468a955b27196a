//! Replays Django operations in plan order the way `ProjectState` does
//! (models, tables, fields, columns, primary keys, many-to-many join tables)
//! and turns each operation into the destructive or breaking database
//! effects Django's schema editor would have.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::super::names::{default_table, m2m_table};
use super::super::sql::{SqlEffect, analyse_sql};
use super::super::{Engine, MigrationId, OpKind, Operation, Problem};
use super::reader::{MigrationFile, OpEntry};
use super::value::{Call, Value};

/// (app_label, model name lower-cased), as Django keys `ProjectState.models`.
pub(crate) type ModelKey = (String, String);

#[derive(Debug, Clone, PartialEq)]
enum FieldKind {
    Plain,
    /// ForeignKey and OneToOneField: column `<name>_id`.
    Relation,
    ManyToMany,
    /// Related managers and other fields without a column of their own.
    NoColumn,
    /// Django 5.2's CompositePrimaryKey over these field names.
    CompositePk(Vec<String>),
}

#[derive(Debug, Clone)]
struct FieldState {
    name: String,
    kind: FieldKind,
    db_column: Option<String>,
    primary_key: bool,
    parent_link: bool,
    /// Target model of a relation, when it could be resolved.
    remote: Option<ModelKey>,
    /// M2M with an explicit `through` model: no auto-created join table.
    through: bool,
    /// M2M `db_table=`.
    m2m_db_table: Option<String>,
}

impl FieldState {
    fn column(&self) -> Option<String> {
        match self.kind {
            FieldKind::Plain => Some(self.db_column.clone().unwrap_or_else(|| self.name.clone())),
            FieldKind::Relation => Some(
                self.db_column
                    .clone()
                    .unwrap_or_else(|| format!("{}_id", self.name)),
            ),
            FieldKind::ManyToMany | FieldKind::NoColumn | FieldKind::CompositePk(_) => None,
        }
    }

    fn auto_m2m(&self) -> bool {
        self.kind == FieldKind::ManyToMany && !self.through
    }
}

#[derive(Debug, Clone)]
struct ModelState {
    name: String,
    db_table: Option<String>,
    managed: bool,
    proxy: bool,
    order_with_respect_to: bool,
    fields: Vec<FieldState>,
    /// Primary key columns after the primary key field itself was removed
    /// (makemigrations removes an MTI child's `*_ptr` before DeleteModel):
    /// the table still has them until it is dropped.
    former_pk: Option<Vec<String>>,
}

impl ModelState {
    fn field(&self, name: &str) -> Option<&FieldState> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Django's `can_migrate`: only managed, concrete models get DDL.
    fn has_ddl(&self) -> bool {
        self.managed && !self.proxy
    }
}

/// An auto-created M2M join table.
#[derive(Debug, Clone, PartialEq)]
struct Join {
    table: String,
    from_column: String,
    to_column: Option<String>,
}

/// All models of the project, shared structurally so that cloning the state
/// (SeparateDatabaseAndState needs a scratch copy) costs one pointer per model.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProjectState {
    models: HashMap<ModelKey, Arc<ModelState>>,
}

/// Tables of django.contrib apps, which have no migrations in the project.
const CONTRIB_PKS: &[(&str, &str)] = &[
    ("auth_user", "id"),
    ("auth_group", "id"),
    ("auth_permission", "id"),
    ("auth_user_groups", "id"),
    ("auth_user_user_permissions", "id"),
    ("auth_group_permissions", "id"),
    ("django_content_type", "id"),
    ("django_admin_log", "id"),
    ("django_site", "id"),
    ("django_session", "session_key"),
];

/// Operations of Django's that never lose data.
const HARMLESS: &[&str] = &[
    "AddField",
    "AddIndex",
    "RemoveIndex",
    "RenameIndex",
    "AddConstraint",
    "RemoveConstraint",
    "AlterConstraint",
    "AlterUniqueTogether",
    "AlterIndexTogether",
    "AlterModelManagers",
    "AlterModelTableComment",
    "AlterModelOptions",
    "CreateModel",
];

pub(crate) struct Replayer {
    state: ProjectState,
    engine: Engine,
}

/// Where emitted operations and problems go, and what they are attributed to.
struct Ctx<'a> {
    migration: &'a MigrationId,
    file: &'a Path,
    app: &'a str,
    engine: Engine,
    ops: Vec<Operation>,
    problems: Vec<Problem>,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        kind: OpKind,
        table: Option<String>,
        columns: Vec<String>,
        primary_key: Vec<String>,
        new_name: Option<String>,
        source: String,
        line: usize,
    ) {
        self.ops.push(Operation {
            migration: self.migration.clone(),
            kind,
            schema: None,
            table,
            columns,
            primary_key,
            new_name,
            source,
            file: self.file.to_path_buf(),
            line,
        });
    }

    fn opaque(&mut self, source: String, line: usize) {
        self.emit(
            OpKind::Opaque,
            None,
            Vec::new(),
            Vec::new(),
            None,
            source,
            line,
        );
    }

    fn problem(&mut self, line: usize, message: String) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line,
            message,
        });
    }

    fn default_table(&self, model_lower: &str) -> String {
        default_table(self.app, model_lower, self.engine)
    }
}

impl Replayer {
    pub fn new(engine: Engine) -> Self {
        Replayer {
            state: ProjectState::default(),
            engine,
        }
    }

    /// Applies one migration and returns its destructive operations and the
    /// problems met on the way.
    pub fn apply(
        &mut self,
        migration: &MigrationFile,
        id: &MigrationId,
    ) -> (Vec<Operation>, Vec<Problem>) {
        let mut cx = Ctx {
            migration: id,
            file: &migration.path,
            app: &migration.app,
            engine: self.engine,
            ops: Vec::new(),
            problems: Vec::new(),
        };
        for entry in &migration.operations {
            match entry {
                OpEntry::Call(call) => apply_op(&mut self.state, call, true, &mut cx),
                OpEntry::Unreadable { line, message } => {
                    cx.problem(*line, message.clone());
                    cx.opaque("unreadable operation".to_string(), *line);
                }
            }
        }
        (cx.ops, cx.problems)
    }
}

/// Django's own operations, by class name: `migrations.AddField`,
/// `django.db.migrations.operations.AddField` or a bare imported name.
fn django_op(func: &str) -> Option<&str> {
    let (prefix, name) = func.rsplit_once('.').unwrap_or(("", func));
    let ours = prefix.is_empty()
        || prefix == "migrations"
        || prefix == "django.db.migrations"
        || prefix.starts_with("django.db.migrations.");
    ours.then_some(name)
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

fn table_of(key: &ModelKey, m: &ModelState, engine: Engine) -> String {
    m.db_table
        .clone()
        .unwrap_or_else(|| default_table(&key.0, &key.1, engine))
}

fn primary_key(m: &ModelState) -> Vec<String> {
    if let Some(f) = m.fields.iter().find(|f| f.primary_key) {
        if let FieldKind::CompositePk(names) = &f.kind {
            return names
                .iter()
                .filter_map(|n| m.field(n).and_then(FieldState::column))
                .collect();
        }
        if let Some(c) = f.column() {
            return vec![c];
        }
    }
    // Multi-table inheritance: the parent link is the primary key.
    if let Some(c) = m
        .fields
        .iter()
        .find(|f| f.parent_link)
        .and_then(FieldState::column)
    {
        return vec![c];
    }
    m.former_pk
        .clone()
        .unwrap_or_else(|| vec!["id".to_string()])
}

/// Django's `create_many_to_many_intermediary_model` naming.
fn join_of(key: &ModelKey, m: &ModelState, f: &FieldState, engine: Engine) -> Option<Join> {
    if !f.auto_m2m() {
        return None;
    }
    let table = f
        .m2m_db_table
        .clone()
        .unwrap_or_else(|| m2m_table(&table_of(key, m, engine), &f.name, engine));
    let from = key.1.clone();
    let (from_column, to_column) = match &f.remote {
        // Django compares model names only, not app labels.
        Some(to) if to.1 == from => (format!("from_{from}_id"), Some(format!("to_{}_id", to.1))),
        Some(to) => (format!("{from}_id"), Some(format!("{}_id", to.1))),
        None => (format!("{from}_id"), None),
    };
    Some(Join {
        table,
        from_column,
        to_column,
    })
}

/// `to=` of a relation: "app.Model", "Model" (same app) or "self".
fn resolve_model_ref(v: &Value, app: &str, model_lower: &str) -> Option<ModelKey> {
    let s = v.as_str()?;
    if s == "self" {
        return Some((app.to_string(), model_lower.to_string()));
    }
    Some(match s.split_once('.') {
        Some((a, m)) => (a.to_string(), lower(m)),
        None => (app.to_string(), lower(s)),
    })
}

fn field_from(name: &str, v: &Value, app: &str, model_lower: &str) -> FieldState {
    let mut f = FieldState {
        name: name.to_string(),
        kind: FieldKind::Plain,
        db_column: None,
        primary_key: false,
        parent_link: false,
        remote: None,
        through: false,
        m2m_db_table: None,
    };
    let Value::Call(call) = v else {
        return f;
    };
    let class = call.short_name();
    f.kind = if class.ends_with("ManyToManyField") {
        FieldKind::ManyToMany
    } else if class.ends_with("ForeignKey")
        || class.ends_with("OneToOneField")
        || class == "ParentalKey"
    {
        FieldKind::Relation
    } else if class == "CompositePrimaryKey" {
        FieldKind::CompositePk(
            call.args
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
        )
    } else if matches!(
        class,
        "TaggableManager" | "GenericRelation" | "ForeignObject" | "GenericForeignKey"
    ) {
        FieldKind::NoColumn
    } else {
        FieldKind::Plain
    };
    if matches!(f.kind, FieldKind::Relation | FieldKind::ManyToMany) {
        f.remote = call
            .arg(0, "to")
            .and_then(|t| resolve_model_ref(t, app, model_lower));
    }
    f.db_column = call
        .kwarg("db_column")
        .and_then(Value::as_str)
        .map(str::to_string);
    f.primary_key = call
        .kwarg("primary_key")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    f.parent_link = call
        .kwarg("parent_link")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    f.through = call.kwarg("through").is_some_and(|t| !t.is_none());
    f.m2m_db_table = call
        .kwarg("db_table")
        .and_then(Value::as_str)
        .map(str::to_string);
    f
}

/// Required string arguments (position, keyword); when any is missing the
/// operation cannot be analysed: a problem, and opaque if it touches the database.
fn required<'c, const N: usize>(
    call: &'c Call,
    args: [(usize, &str); N],
    db: bool,
    cx: &mut Ctx,
) -> Option<[&'c str; N]> {
    let values = args.map(|(pos, name)| call.str_arg(pos, name));
    let missing: Vec<&str> = args
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|((_, name), _)| *name)
        .collect();
    if missing.is_empty() {
        return Some(values.map(|v| v.unwrap_or_default()));
    }
    cx.problem(
        call.line,
        format!(
            "{}: argument(s) {} missing or not a string",
            call.func,
            missing.join(", ")
        ),
    );
    if db {
        cx.opaque(call.func.clone(), call.line);
    }
    None
}

fn apply_op(state: &mut ProjectState, call: &Call, db: bool, cx: &mut Ctx) {
    let Some(op) = django_op(&call.func) else {
        if call.func.starts_with("django.contrib.postgres.operations.") {
            // Extensions, collations, concurrent indexes: no data loss.
            return;
        }
        if db {
            cx.opaque(call.func.clone(), call.line);
        }
        return;
    };
    match op {
        "CreateModel" => create_model(state, call, cx),
        "DeleteModel" => delete_model(state, call, db, cx),
        "RenameModel" => rename_model(state, call, db, cx),
        "AlterModelTable" => alter_model_table(state, call, db, cx),
        "AlterModelOptions" => alter_model_options(state, call, cx),
        "AlterOrderWithRespectTo" => alter_order_wrt(state, call, db, cx),
        "AddField" => add_field(state, call, cx),
        "RemoveField" => remove_field(state, call, db, cx),
        "AlterField" => alter_field(state, call, db, cx),
        "RenameField" => rename_field(state, call, db, cx),
        "SeparateDatabaseAndState" => separate(state, call, db, cx),
        "RunSQL" => run_sql(state, call, db, cx),
        "RunPython" => {
            if db {
                let code = match call.arg(0, "code") {
                    Some(Value::Name(n)) if n.ends_with("RunPython.noop") => return,
                    Some(Value::Name(n)) => n.rsplit('.').next().unwrap_or(n).to_string(),
                    Some(Value::Call(c)) => format!("{}(...)", c.func),
                    _ => "?".to_string(),
                };
                cx.opaque(format!("RunPython({code})"), call.line);
            }
        }
        other if HARMLESS.contains(&other) => {}
        _ => {
            if db {
                cx.opaque(call.func.clone(), call.line);
            }
        }
    }
}

fn model_key(cx: &Ctx, name: &str) -> ModelKey {
    (cx.app.to_string(), lower(name))
}

fn create_model(state: &mut ProjectState, call: &Call, cx: &mut Ctx) {
    let Some(name) = call.str_arg(0, "name") else {
        cx.problem(call.line, "CreateModel without a name".to_string());
        return;
    };
    let key = model_key(cx, name);
    let options = call.arg(2, "options");
    let opt = |k: &str| options.and_then(|o| o.dict_get(k));
    let mut fields = Vec::new();
    for item in call.arg(1, "fields").and_then(Value::as_seq).unwrap_or(&[]) {
        match item.as_seq() {
            Some([Value::Str(fname), value]) => {
                fields.push(field_from(fname, value, &key.0, &key.1))
            }
            _ => cx.problem(
                call.line,
                format!("CreateModel({name}): field entry is not a (name, field) pair"),
            ),
        }
    }
    let model = ModelState {
        name: name.to_string(),
        db_table: opt("db_table").and_then(Value::as_str).map(str::to_string),
        managed: opt("managed").and_then(Value::as_bool).unwrap_or(true),
        proxy: opt("proxy").and_then(Value::as_bool).unwrap_or(false),
        order_with_respect_to: opt("order_with_respect_to").is_some_and(|v| v.as_str().is_some()),
        fields,
        former_pk: None,
    };
    state.models.insert(key, Arc::new(model));
}

fn delete_model(state: &mut ProjectState, call: &Call, db: bool, cx: &mut Ctx) {
    let Some([name]) = required(call, [(0, "name")], db, cx) else {
        return;
    };
    let key = model_key(cx, name);
    let model = state.models.remove(&key);
    if !db {
        return;
    }
    let source = format!("DeleteModel({name})");
    let Some(m) = model else {
        cx.problem(
            call.line,
            format!(
                "{source}: model {}.{} is not in the replayed state; assuming its default table",
                key.0, key.1
            ),
        );
        let table = cx.default_table(&key.1);
        cx.emit(
            OpKind::DropTable,
            Some(table),
            Vec::new(),
            Vec::new(),
            None,
            source,
            call.line,
        );
        return;
    };
    if !m.has_ddl() {
        return;
    }
    let table = table_of(&key, &m, cx.engine);
    cx.emit(
        OpKind::DropTable,
        Some(table),
        Vec::new(),
        primary_key(&m),
        None,
        source.clone(),
        call.line,
    );
    for f in &m.fields {
        if let Some(join) = join_of(&key, &m, f, cx.engine) {
            cx.emit(
                OpKind::DropTable,
                Some(join.table),
                Vec::new(),
                vec!["id".to_string()],
                None,
                format!("{source} M2M {}", f.name),
                call.line,
            );
        }
    }
}

/// Join tables of every auto M2M pointing at `target` from another model.
fn joins_pointing_at(
    state: &ProjectState,
    target: &ModelKey,
    engine: Engine,
) -> Vec<(ModelKey, String, Join)> {
    let mut out: Vec<(ModelKey, String, Join)> = state
        .models
        .iter()
        .filter(|(k, _)| *k != target)
        .flat_map(|(k, m)| {
            m.fields
                .iter()
                .filter(|f| f.remote.as_ref() == Some(target))
                .filter_map(|f| join_of(k, m, f, engine).map(|j| (k.clone(), f.name.clone(), j)))
        })
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

fn own_joins(key: &ModelKey, m: &ModelState, engine: Engine) -> Vec<(String, Join)> {
    m.fields
        .iter()
        .filter_map(|f| join_of(key, m, f, engine).map(|j| (f.name.clone(), j)))
        .collect()
}

/// Emits the renames that turn join table `old` into `new`.
fn emit_join_change(cx: &mut Ctx, old: &Join, new: &Join, source: &str, line: usize) {
    let pk = vec!["id".to_string()];
    if old.table != new.table {
        cx.emit(
            OpKind::RenameTable,
            Some(old.table.clone()),
            Vec::new(),
            pk.clone(),
            Some(new.table.clone()),
            source.to_string(),
            line,
        );
    }
    let mut columns = vec![(Some(&old.from_column), Some(&new.from_column))];
    columns.push((old.to_column.as_ref(), new.to_column.as_ref()));
    for (o, n) in columns {
        if let (Some(o), Some(n)) = (o, n)
            && o != n
        {
            cx.emit(
                OpKind::RenameColumn,
                Some(new.table.clone()),
                vec![o.clone()],
                pk.clone(),
                Some(n.clone()),
                source.to_string(),
                line,
            );
        }
    }
}

fn rename_model(state: &mut ProjectState, call: &Call, db: bool, cx: &mut Ctx) {
    let Some([old_name, new_name]) = required(call, [(0, "old_name"), (1, "new_name")], db, cx)
    else {
        return;
    };
    let old_key = model_key(cx, old_name);
    let new_key = model_key(cx, new_name);
    let source = format!("RenameModel({old_name}, {new_name})");
    let Some(old_model) = state.models.remove(&old_key) else {
        if db {
            cx.problem(
                call.line,
                format!("{source}: model not in the replayed state; assuming default table names"),
            );
            let (old, new) = (cx.default_table(&old_key.1), cx.default_table(&new_key.1));
            cx.emit(
                OpKind::RenameTable,
                Some(old),
                Vec::new(),
                Vec::new(),
                Some(new),
                source,
                call.line,
            );
        }
        return;
    };
    let old_table = table_of(&old_key, &old_model, cx.engine);
    let old_own = own_joins(&old_key, &old_model, cx.engine);
    let old_foreign = joins_pointing_at(state, &old_key, cx.engine);

    let mut model = (*old_model).clone();
    model.name = new_name.to_string();
    for f in &mut model.fields {
        if f.remote.as_ref() == Some(&old_key) {
            f.remote = Some(new_key.clone());
        }
    }
    // Every relation pointing at the old name now points at the new one.
    for m in state.models.values_mut() {
        if m.fields.iter().any(|f| f.remote.as_ref() == Some(&old_key)) {
            for f in &mut Arc::make_mut(m).fields {
                if f.remote.as_ref() == Some(&old_key) {
                    f.remote = Some(new_key.clone());
                }
            }
        }
    }
    let new_table = table_of(&new_key, &model, cx.engine);
    let new_own = own_joins(&new_key, &model, cx.engine);
    let has_ddl = model.has_ddl();
    let pk = primary_key(&model);
    state.models.insert(new_key.clone(), Arc::new(model));
    if !db || !has_ddl {
        return;
    }
    if old_table != new_table {
        cx.emit(
            OpKind::RenameTable,
            Some(old_table),
            Vec::new(),
            pk,
            Some(new_table),
            source.clone(),
            call.line,
        );
    }
    for ((field, old), (_, new)) in old_own.iter().zip(new_own.iter()) {
        emit_join_change(cx, old, new, &format!("{source} M2M {field}"), call.line);
    }
    let new_foreign = joins_pointing_at(state, &new_key, cx.engine);
    for (old, new) in old_foreign.iter().zip(new_foreign.iter()) {
        let label = format!("{source} M2M {}.{}", old.0.1, old.1);
        emit_join_change(cx, &old.2, &new.2, &label, call.line);
    }
}

fn alter_model_table(state: &mut ProjectState, call: &Call, db: bool, cx: &mut Ctx) {
    let Some([name]) = required(call, [(0, "name")], db, cx) else {
        return;
    };
    let key = model_key(cx, name);
    let new_db_table = call.str_arg(1, "table").map(str::to_string);
    let source = format!("AlterModelTable({name})");
    let Some(m) = state.models.get_mut(&key) else {
        if db {
            cx.problem(
                call.line,
                format!("{source}: model not in the replayed state"),
            );
            let old = cx.default_table(&key.1);
            let new = new_db_table.unwrap_or_else(|| old.clone());
            if old != new {
                cx.emit(
                    OpKind::RenameTable,
                    Some(old),
                    Vec::new(),
                    Vec::new(),
                    Some(new),
                    source,
                    call.line,
                );
            }
        }
        return;
    };
    let old_table = table_of(&key, m, cx.engine);
    let old_joins = own_joins(&key, m, cx.engine);
    Arc::make_mut(m).db_table = new_db_table;
    if !db || !m.has_ddl() {
        return;
    }
    let new_table = table_of(&key, m, cx.engine);
    let new_joins = own_joins(&key, m, cx.engine);
    if old_table != new_table {
        cx.emit(
            OpKind::RenameTable,
            Some(old_table),
            Vec::new(),
            primary_key(m),
            Some(new_table),
            source.clone(),
            call.line,
        );
    }
    for ((field, old), (_, new)) in old_joins.iter().zip(new_joins.iter()) {
        emit_join_change(cx, old, new, &format!("{source} M2M {field}"), call.line);
    }
}

fn alter_model_options(state: &mut ProjectState, call: &Call, cx: &mut Ctx) {
    let Some(name) = call.str_arg(0, "name") else {
        return;
    };
    if let Some(m) = state.models.get_mut(&model_key(cx, name)) {
        // `managed` is one of AlterModelOptions.ALTER_OPTION_KEYS: absent
        // from the new options means back to the default.
        let managed = call
            .arg(1, "options")
            .and_then(|o| o.dict_get("managed"))
            .and_then(Value::as_bool)
            .unwrap_or(true);
        Arc::make_mut(m).managed = managed;
    }
}

fn alter_order_wrt(state: &mut ProjectState, call: &Call, db: bool, cx: &mut Ctx) {
    let Some([name]) = required(call, [(0, "name")], db, cx) else {
        return;
    };
    let key = model_key(cx, name);
    let new = call.str_arg(1, "order_with_respect_to").is_some();
    let Some(m) = state.models.get_mut(&key) else {
        return;
    };
    let old = m.order_with_respect_to;
    Arc::make_mut(m).order_with_respect_to = new;
    // Dropping order_with_respect_to removes the hidden `_order` column.
    if db && old && !new && m.has_ddl() {
        let table = table_of(&key, m, cx.engine);
        cx.emit(
            OpKind::DropColumn,
            Some(table),
            vec!["_order".to_string()],
            primary_key(m),
            None,
            format!("AlterOrderWithRespectTo({name})"),
            call.line,
        );
    }
}

fn add_field(state: &mut ProjectState, call: &Call, cx: &mut Ctx) {
    let (Some(model), Some(name), Some(field)) = (
        call.str_arg(0, "model_name"),
        call.str_arg(1, "name"),
        call.arg(2, "field"),
    ) else {
        cx.problem(
            call.line,
            "AddField: model_name, name or field missing".to_string(),
        );
        return;
    };
    let key = model_key(cx, model);
    if let Some(m) = state.models.get_mut(&key) {
        let f = field_from(name, field, &key.0, &key.1);
        let m = Arc::make_mut(m);
        match m.fields.iter_mut().find(|x| x.name == name) {
            Some(existing) => *existing = f,
            None => m.fields.push(f),
        }
    }
}

fn remove_field(state: &mut ProjectState, call: &Call, db: bool, cx: &mut Ctx) {
    let Some([model, name]) = required(call, [(0, "model_name"), (1, "name")], db, cx) else {
        return;
    };
    let key = model_key(cx, model);
    let source = format!("RemoveField({model}.{name})");
    let Some(m) = state.models.get_mut(&key) else {
        if db {
            cx.problem(
                call.line,
                format!(
                    "{source}: model not in the replayed state; assuming default table and column"
                ),
            );
            let table = cx.default_table(&key.1);
            cx.emit(
                OpKind::DropColumn,
                Some(table),
                vec![name.to_string()],
                Vec::new(),
                None,
                source,
                call.line,
            );
        }
        return;
    };
    let pk = primary_key(m);
    let table = table_of(&key, m, cx.engine);
    let pos = m.fields.iter().position(|f| f.name == name);
    let join = pos.and_then(|p| join_of(&key, m, &m.fields[p], cx.engine));
    let field = pos.map(|p| Arc::make_mut(m).fields.remove(p));
    if field
        .as_ref()
        .is_some_and(|f| f.primary_key || f.parent_link)
    {
        Arc::make_mut(m).former_pk = Some(pk.clone());
    }
    if !db || !m.has_ddl() {
        return;
    }
    match field {
        None => {
            cx.problem(
                call.line,
                format!("{source}: field not in the replayed state; assuming column '{name}'"),
            );
            cx.emit(
                OpKind::DropColumn,
                Some(table),
                vec![name.to_string()],
                pk,
                None,
                source,
                call.line,
            );
        }
        Some(f) => {
            if let Some(join) = join {
                cx.emit(
                    OpKind::DropTable,
                    Some(join.table),
                    Vec::new(),
                    vec!["id".to_string()],
                    None,
                    source,
                    call.line,
                );
            } else if let Some(column) = f.column() {
                cx.emit(
                    OpKind::DropColumn,
                    Some(table),
                    vec![column],
                    pk,
                    None,
                    source,
                    call.line,
                );
            }
        }
    }
}

fn alter_field(state: &mut ProjectState, call: &Call, db: bool, cx: &mut Ctx) {
    let (Some(model), Some(name), Some(field)) = (
        call.str_arg(0, "model_name"),
        call.str_arg(1, "name"),
        call.arg(2, "field"),
    ) else {
        cx.problem(
            call.line,
            "AlterField: model_name, name or field missing".to_string(),
        );
        return;
    };
    let key = model_key(cx, model);
    let Some(m) = state.models.get_mut(&key) else {
        return;
    };
    let new = field_from(name, field, &key.0, &key.1);
    let new_join = join_of(&key, m, &new, cx.engine);
    let new_column = new.column();
    let mm = Arc::make_mut(m);
    let old = match mm.fields.iter_mut().find(|f| f.name == name) {
        Some(slot) => Some(std::mem::replace(slot, new)),
        None => {
            mm.fields.push(new);
            None
        }
    };
    if !db || !m.has_ddl() {
        return;
    }
    let Some(old) = old else {
        return;
    };
    let source = format!("AlterField({model}.{name})");
    let table = table_of(&key, m, cx.engine);
    if let (Some(o), Some(n)) = (join_of(&key, m, &old, cx.engine), new_join) {
        emit_join_change(cx, &o, &n, &source, call.line);
    } else if let (Some(o), Some(n)) = (old.column(), new_column)
        && o != n
    {
        cx.emit(
            OpKind::RenameColumn,
            Some(table),
            vec![o],
            primary_key(m),
            Some(n),
            source,
            call.line,
        );
    }
}

fn rename_field(state: &mut ProjectState, call: &Call, db: bool, cx: &mut Ctx) {
    let Some([model, old_name, new_name]) = required(
        call,
        [(0, "model_name"), (1, "old_name"), (2, "new_name")],
        db,
        cx,
    ) else {
        return;
    };
    let key = model_key(cx, model);
    let source = format!("RenameField({model}.{old_name}, {new_name})");
    let Some(m) = state.models.get_mut(&key) else {
        if db {
            cx.problem(
                call.line,
                format!("{source}: model not in the replayed state; assuming default names"),
            );
            let table = cx.default_table(&key.1);
            cx.emit(
                OpKind::RenameColumn,
                Some(table),
                vec![old_name.to_string()],
                Vec::new(),
                Some(new_name.to_string()),
                source,
                call.line,
            );
        }
        return;
    };
    let Some(pos) = m.fields.iter().position(|f| f.name == old_name) else {
        if db && m.has_ddl() {
            cx.problem(
                call.line,
                format!("{source}: field not in the replayed state"),
            );
        }
        return;
    };
    let old_column = m.fields[pos].column();
    let old_join = join_of(&key, m, &m.fields[pos], cx.engine);
    {
        let mm = Arc::make_mut(m);
        mm.fields[pos].name = new_name.to_string();
        for f in &mut mm.fields {
            if let FieldKind::CompositePk(names) = &mut f.kind {
                for n in names.iter_mut().filter(|n| *n == old_name) {
                    *n = new_name.to_string();
                }
            }
        }
    }
    if !db || !m.has_ddl() {
        return;
    }
    let table = table_of(&key, m, cx.engine);
    if let (Some(o), Some(n)) = (old_join, join_of(&key, m, &m.fields[pos], cx.engine)) {
        emit_join_change(cx, &o, &n, &source, call.line);
    } else if let (Some(o), Some(n)) = (old_column, m.fields[pos].column())
        && o != n
    {
        cx.emit(
            OpKind::RenameColumn,
            Some(table),
            vec![o],
            primary_key(m),
            Some(n),
            source,
            call.line,
        );
    }
}

fn op_list<'c>(call: &'c Call, pos: usize, name: &str, cx: &mut Ctx) -> Vec<&'c Call> {
    let mut out = Vec::new();
    match call.arg(pos, name) {
        None | Some(Value::None) => {}
        Some(v) => match v.as_seq() {
            Some(items) => {
                for item in items {
                    match item {
                        Value::Call(c) => out.push(c),
                        _ => {
                            cx.problem(
                                call.line,
                                format!("{}: {name} element is not an operation", call.func),
                            );
                            cx.opaque(format!("{} {name}", call.func), call.line);
                        }
                    }
                }
            }
            None => {
                cx.problem(
                    call.line,
                    format!("{}: {name} is not a literal list", call.func),
                );
                cx.opaque(format!("{} {name}", call.func), call.line);
            }
        },
    }
    out
}

fn separate(state: &mut ProjectState, call: &Call, db: bool, cx: &mut Ctx) {
    let database_ops = op_list(call, 0, "database_operations", cx);
    let state_ops = op_list(call, 1, "state_operations", cx);
    if db {
        // Django runs database_operations against a scratch copy of the
        // state as it was before this operation, then discards it.
        let mut scratch = state.clone();
        for op in database_ops {
            apply_op(&mut scratch, op, true, cx);
        }
    }
    for op in state_ops {
        apply_op(state, op, false, cx);
    }
}

/// `%s` / `%(name)s` placeholders of RunSQL params stand in for values.
fn substitute_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('%') {
            out.push('%');
            rest = r;
        } else if let Some(r) = after.strip_prefix('s') {
            out.push_str("NULL");
            rest = r;
        } else if let Some(end) = after.strip_prefix('(').and_then(|a| a.find(")s")) {
            out.push_str("NULL");
            rest = &after[end + 3..];
        } else {
            out.push('%');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn run_sql(state: &mut ProjectState, call: &Call, db: bool, cx: &mut Ctx) {
    if db {
        let mut texts: Vec<String> = Vec::new();
        let mut readable = true;
        match call.arg(0, "sql") {
            Some(Value::Str(s)) => texts.push(s.clone()),
            Some(Value::Name(n)) if n.ends_with("RunSQL.noop") => {}
            Some(v @ (Value::List(_) | Value::Tuple(_))) => {
                for item in v.as_seq().unwrap_or(&[]) {
                    match item {
                        Value::Str(s) => texts.push(s.clone()),
                        Value::List(pair) | Value::Tuple(pair) => match pair.as_slice() {
                            [Value::Str(s)] => texts.push(s.clone()),
                            [Value::Str(s), _params] => texts.push(substitute_params(s)),
                            _ => readable = false,
                        },
                        _ => readable = false,
                    }
                }
            }
            _ => readable = false,
        }
        if !readable {
            cx.problem(
                call.line,
                "RunSQL: sql is not a literal string or list of statements".to_string(),
            );
            cx.opaque("RunSQL".to_string(), call.line);
        }
        for text in texts {
            match analyse_sql(&text, cx.engine) {
                Ok(effects) => {
                    for e in effects {
                        emit_sql_effect(state, e, call.line, cx);
                    }
                }
                Err(err) => {
                    cx.problem(call.line, format!("RunSQL: {err}"));
                    cx.opaque("RunSQL".to_string(), call.line);
                }
            }
        }
    }
    for op in op_list(call, 2, "state_operations", cx) {
        apply_op(state, op, false, cx);
    }
}

fn emit_sql_effect(state: &ProjectState, e: SqlEffect, line: usize, cx: &mut Ctx) {
    let primary_key = e
        .table
        .as_deref()
        .map(|t| state.primary_key_of_table(t, cx.engine))
        .unwrap_or_default();
    cx.ops.push(Operation {
        migration: cx.migration.clone(),
        kind: e.kind,
        schema: e.schema,
        table: e.table,
        columns: e.columns,
        primary_key,
        new_name: e.new_name,
        source: format!("RunSQL({})", e.statement),
        file: cx.file.to_path_buf(),
        line,
    });
}

impl ProjectState {
    /// Primary key of whatever table currently has this name, if known:
    /// exact name first, then case-insensitively (MySQL, SQLite), each in
    /// model-key order so the answer does not depend on hash order.
    fn primary_key_of_table(&self, table: &str, engine: Engine) -> Vec<String> {
        let mut keys: Vec<&ModelKey> = self.models.keys().collect();
        keys.sort();
        let join_pk = || vec!["id".to_string()];
        for exact in [true, false] {
            let same = |t: &str| {
                if exact {
                    t == table
                } else {
                    t.eq_ignore_ascii_case(table)
                }
            };
            for key in &keys {
                let Some(m) = self.models.get(*key) else {
                    continue;
                };
                if !m.has_ddl() {
                    continue;
                }
                if same(&table_of(key, m, engine)) {
                    return primary_key(m);
                }
                if m.fields
                    .iter()
                    .filter_map(|f| join_of(key, m, f, engine))
                    .any(|j| same(&j.table))
                {
                    return join_pk();
                }
            }
        }
        CONTRIB_PKS
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(table))
            .map(|(_, pk)| vec![pk.to_string()])
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::{Engine, OpKind, Options, analyse_django};
    use super::super::testutil::{Project, migration, ops};

    /// The project generated with Django 5.2 (makemigrations, plus two
    /// hand-written rename migrations); expectations follow `sqlmigrate`.
    fn django_project() -> Project {
        let p = Project::new();
        for (app, name, text) in [
            (
                "catalog",
                "0001_initial",
                include_str!("../../../tests/fixtures/migrations/catalog__0001_initial.py"),
            ),
            (
                "catalog",
                "0002_delete_tag",
                include_str!("../../../tests/fixtures/migrations/catalog__0002_delete_tag.py"),
            ),
            (
                "catalog",
                "0003_rename",
                include_str!("../../../tests/fixtures/migrations/catalog__0003_rename.py"),
            ),
            (
                "shop",
                "0001_initial",
                include_str!("../../../tests/fixtures/migrations/shop__0001_initial.py"),
            ),
            (
                "shop",
                "0002_remove_book_product_ptr_delete_legacy_and_more",
                include_str!(
                    "../../../tests/fixtures/migrations/shop__0002_remove_book_product_ptr_delete_legacy_and_more.py"
                ),
            ),
            (
                "shop",
                "0003_renames",
                include_str!("../../../tests/fixtures/migrations/shop__0003_renames.py"),
            ),
        ] {
            p.add(app, name, text);
        }
        p
    }

    #[test]
    fn django_generated_project_matches_sqlmigrate() {
        let a = django_project().analyse_on(Engine::Sqlite);
        assert_eq!(a.problems, []);
        let order: Vec<String> = a.migrations.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(
            order,
            [
                "catalog.0001_initial",
                "shop.0001_initial",
                "shop.0002_remove_book_product_ptr_delete_legacy_and_more",
                "catalog.0002_delete_tag",
                "catalog.0003_rename",
                "shop.0003_renames"
            ]
        );
        assert_eq!(ops(&a, "catalog.0001_initial"), Vec::<String>::new());
        assert_eq!(
            ops(
                &a,
                "shop.0002_remove_book_product_ptr_delete_legacy_and_more"
            ),
            [
                "drop_column shop_book [\"product_ptr_id\"] pk=[\"product_ptr_id\"] | RemoveField(book.product_ptr)",
                "drop_column shop_product [\"legacy_sku\"] pk=[\"id\"] | RemoveField(product.legacy_sku)",
                "drop_column shop_product [\"owner_id\"] pk=[\"id\"] | RemoveField(product.owner)",
                "drop_table shop_product_tags pk=[\"id\"] | RemoveField(product.tags)",
                "drop_column shop_order [\"_order\"] pk=[\"id\"] | AlterOrderWithRespectTo(order)",
                "drop_table shop_book pk=[\"product_ptr_id\"] | DeleteModel(Book)",
            ]
        );
        assert_eq!(
            ops(&a, "catalog.0002_delete_tag"),
            ["drop_table catalog_tag pk=[\"id\"] | DeleteModel(Tag)"]
        );
        assert_eq!(
            ops(&a, "catalog.0003_rename"),
            [
                "rename_table catalog_category pk=[\"id\"] -> catalog_kind | RenameModel(Category, Kind)",
                "rename_table catalog_category_related pk=[\"id\"] -> catalog_kind_related | RenameModel(Category, Kind) M2M related",
                "rename_column catalog_kind_related [\"from_category_id\"] pk=[\"id\"] -> from_kind_id | RenameModel(Category, Kind) M2M related",
                "rename_column catalog_kind_related [\"to_category_id\"] pk=[\"id\"] -> to_kind_id | RenameModel(Category, Kind) M2M related",
                "rename_column catalog_productwithaveryveryverylongname_relatedcategorieswithlongname [\"category_id\"] pk=[\"id\"] -> kind_id | RenameModel(Category, Kind) M2M productwithaveryveryverylongname.relatedcategorieswithlongname",
            ]
        );
        assert_eq!(
            ops(&a, "shop.0003_renames"),
            [
                "rename_column shop_product [\"name\"] pk=[\"id\"] -> title | RenameField(product.name, title)",
                "rename_table shop_order_products pk=[\"id\"] -> shop_order_items | RenameField(order.products, items)",
                "rename_column shop_order [\"note\"] pk=[\"id\"] -> memo | AlterField(order.note)",
                "rename_table shop_order pk=[\"id\"] -> orders | AlterModelTable(order)",
                "rename_table shop_order_items pk=[\"id\"] -> orders_items | AlterModelTable(order) M2M items",
                "rename_column orders [\"cart_id\"] pk=[\"id\"] -> basket_id | RenameField(order.cart, basket)",
            ]
        );
        let first = &a.migrations[2].operations[0];
        assert_eq!(first.line, 13);
        assert!(
            first.file.ends_with(
                "shop/migrations/0002_remove_book_product_ptr_delete_legacy_and_more.py"
            )
        );
    }

    #[test]
    fn long_join_tables_are_truncated_per_engine() {
        let p = django_project();
        let delete = "        migrations.DeleteModel(\n            name='ProductWithAVeryVeryVeryLongName',\n        ),\n";
        p.add(
            "catalog",
            "0004_delete",
            &migration(&[("catalog", "0003_rename")], delete),
        );
        let expect = |engine, join: &str| {
            let a = p.analyse_on(engine);
            assert_eq!(
                ops(&a, "catalog.0004_delete"),
                [
                    "drop_table catalog_productwithaveryveryverylongname pk=[\"id\"] | DeleteModel(ProductWithAVeryVeryVeryLongName)".to_string(),
                    format!("drop_table {join} pk=[\"id\"] | DeleteModel(ProductWithAVeryVeryVeryLongName) M2M relatedcategorieswithlongname"),
                ],
                "{engine:?}"
            );
        };
        // Values from Django 5.2's truncate_name(name, 63 / 64).
        expect(
            Engine::Postgres,
            "catalog_productwithaveryveryverylongname_relatedcategoriesw7ce6",
        );
        expect(
            Engine::Mysql,
            "catalog_productwithaveryveryverylongname_relatedcategorieswi7ce6",
        );
        expect(
            Engine::Sqlite,
            "catalog_productwithaveryveryverylongname_relatedcategorieswithlongname",
        );
    }

    const INITIAL: &str = "        migrations.CreateModel(
            name='Product',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('legacy_sku', models.CharField(max_length=20)),
                ('code', models.CharField(db_column='CODE', max_length=5)),
                ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to=settings.AUTH_USER_MODEL)),
                ('supplier', models.ForeignKey(db_column='supplier_ref', on_delete=django.db.models.deletion.CASCADE, to='shop.supplier')),
                ('watchers', models.ManyToManyField(related_name='watched', to=settings.AUTH_USER_MODEL)),
                ('similar', models.ManyToManyField(to='shop.product')),
                ('stockists', models.ManyToManyField(through='shop.Stocking', to='shop.supplier')),
                ('labels', models.ManyToManyField(db_table='product_labels', to='shop.supplier')),
            ],
        ),
        migrations.CreateModel(
            name='Supplier',
            fields=[
                ('code', models.CharField(max_length=10, primary_key=True, serialize=False)),
            ],
            options={
                'db_table': 'suppliers',
            },
        ),
        migrations.CreateModel(
            name='Archive',
            fields=[
                ('id', models.AutoField(primary_key=True)),
                ('note', models.TextField()),
                ('items', models.ManyToManyField(to='shop.product')),
            ],
            options={
                'managed': False,
            },
        ),
        migrations.CreateModel(
            name='ProductProxy',
            fields=[
            ],
            options={
                'proxy': True,
                'indexes': [],
                'constraints': [],
            },
            bases=('shop.product',),
        ),
";

    fn project(second: &str) -> Project {
        let p = Project::new();
        p.add(
            "shop",
            "0001_initial",
            &migration(&[("", "swappable")], INITIAL),
        );
        p.add(
            "shop",
            "0002_change",
            &migration(&[("shop", "0001_initial")], second),
        );
        p
    }

    fn second(text: &str) -> Vec<String> {
        ops(&project(text).analyse(), "shop.0002_change")
    }

    #[test]
    fn remove_field_variants() {
        let text = "        migrations.RemoveField(\n            model_name='product',\n            name='legacy_sku',\n        ),
        migrations.RemoveField(model_name='product', name='code'),
        migrations.RemoveField(model_name='product', name='owner'),
        migrations.RemoveField(model_name='product', name='supplier'),
        migrations.RemoveField(model_name='product', name='watchers'),
        migrations.RemoveField(model_name='product', name='similar'),
        migrations.RemoveField(model_name='product', name='stockists'),
        migrations.RemoveField(model_name='product', name='labels'),
        migrations.RemoveField(model_name='archive', name='note'),
        migrations.RemoveField(model_name='archive', name='items'),
";
        assert_eq!(
            second(text),
            [
                "drop_column shop_product [\"legacy_sku\"] pk=[\"id\"] | RemoveField(product.legacy_sku)",
                "drop_column shop_product [\"CODE\"] pk=[\"id\"] | RemoveField(product.code)",
                "drop_column shop_product [\"owner_id\"] pk=[\"id\"] | RemoveField(product.owner)",
                "drop_column shop_product [\"supplier_ref\"] pk=[\"id\"] | RemoveField(product.supplier)",
                "drop_table shop_product_watchers pk=[\"id\"] | RemoveField(product.watchers)",
                "drop_table shop_product_similar pk=[\"id\"] | RemoveField(product.similar)",
                "drop_table product_labels pk=[\"id\"] | RemoveField(product.labels)",
            ]
        );
    }

    #[test]
    fn delete_model_drops_table_and_auto_join_tables() {
        let text = "        migrations.DeleteModel(\n            name='Product',\n        ),
        migrations.DeleteModel(name='Supplier'),
        migrations.DeleteModel(name='Archive'),
        migrations.DeleteModel(name='ProductProxy'),
";
        assert_eq!(
            second(text),
            [
                "drop_table shop_product pk=[\"id\"] | DeleteModel(Product)",
                "drop_table shop_product_watchers pk=[\"id\"] | DeleteModel(Product) M2M watchers",
                "drop_table shop_product_similar pk=[\"id\"] | DeleteModel(Product) M2M similar",
                "drop_table product_labels pk=[\"id\"] | DeleteModel(Product) M2M labels",
                "drop_table suppliers pk=[\"code\"] | DeleteModel(Supplier)",
            ]
        );
    }

    #[test]
    fn join_columns_follow_django() {
        // Renaming the model shows the join tables' column names.
        let text = "        migrations.RenameModel(\n            old_name='Product',\n            new_name='Item',\n        ),\n";
        assert_eq!(
            second(text),
            [
                "rename_table shop_product pk=[\"id\"] -> shop_item | RenameModel(Product, Item)",
                "rename_table shop_product_watchers pk=[\"id\"] -> shop_item_watchers | RenameModel(Product, Item) M2M watchers",
                "rename_column shop_item_watchers [\"product_id\"] pk=[\"id\"] -> item_id | RenameModel(Product, Item) M2M watchers",
                "rename_table shop_product_similar pk=[\"id\"] -> shop_item_similar | RenameModel(Product, Item) M2M similar",
                "rename_column shop_item_similar [\"from_product_id\"] pk=[\"id\"] -> from_item_id | RenameModel(Product, Item) M2M similar",
                "rename_column shop_item_similar [\"to_product_id\"] pk=[\"id\"] -> to_item_id | RenameModel(Product, Item) M2M similar",
                "rename_column product_labels [\"product_id\"] pk=[\"id\"] -> item_id | RenameModel(Product, Item) M2M labels",
                "rename_column shop_archive_items [\"product_id\"] pk=[\"id\"] -> item_id | RenameModel(Product, Item) M2M archive.items",
            ]
        );
    }

    #[test]
    fn custom_user_model_names_join_columns() {
        let p = Project::new();
        p.add(
            "shop",
            "0001_initial",
            &migration(&[("", "swappable")], INITIAL),
        );
        p.add("accounts", "0001_initial", &migration(&[], "        migrations.CreateModel(name='Member', fields=[('id', models.AutoField(primary_key=True))]),\n"));
        p.add(
            "shop",
            "0002_change",
            &migration(
                &[("shop", "0001_initial")],
                "        migrations.RenameModel('Product', 'Item'),\n",
            ),
        );
        let applied = std::collections::BTreeSet::new();
        let opts = Options {
            engine: Engine::Postgres,
            auth_user_model: "accounts.Member".into(),
        };
        let a = analyse_django(p.path(), &applied, &opts).unwrap_or_else(|e| panic!("{e}"));
        let order: Vec<String> = a.migrations.iter().map(|m| m.id.to_string()).collect();
        // swappable_dependency makes shop depend on accounts' first migration.
        assert_eq!(
            order,
            [
                "accounts.0001_initial",
                "shop.0001_initial",
                "shop.0002_change"
            ]
        );
        let watchers: Vec<_> = ops(&a, "shop.0002_change")
            .into_iter()
            .filter(|o| o.contains("M2M watchers"))
            .collect();
        assert_eq!(
            watchers,
            [
                "rename_table shop_product_watchers pk=[\"id\"] -> shop_item_watchers | RenameModel(Product, Item) M2M watchers",
                "rename_column shop_item_watchers [\"product_id\"] pk=[\"id\"] -> item_id | RenameModel(Product, Item) M2M watchers",
            ]
        );
    }

    #[test]
    fn rename_model_with_explicit_table_keeps_it() {
        let text = "        migrations.RenameModel(old_name='Supplier', new_name='Vendor'),\n";
        // suppliers keeps its name; M2Ms pointing at it rename their column.
        assert_eq!(
            second(text),
            [
                "rename_column product_labels [\"supplier_id\"] pk=[\"id\"] -> vendor_id | RenameModel(Supplier, Vendor) M2M product.labels"
            ]
        );
    }

    #[test]
    fn alter_model_table_and_back_to_default() {
        let text = "        migrations.AlterModelTable(\n            name='product',\n            table='products',\n        ),
        migrations.AlterModelTable(name='supplier', table=None),
        migrations.AlterModelTable(name='archive', table='archives'),
";
        assert_eq!(
            second(text),
            [
                "rename_table shop_product pk=[\"id\"] -> products | AlterModelTable(product)",
                "rename_table shop_product_watchers pk=[\"id\"] -> products_watchers | AlterModelTable(product) M2M watchers",
                "rename_table shop_product_similar pk=[\"id\"] -> products_similar | AlterModelTable(product) M2M similar",
                "rename_table suppliers pk=[\"code\"] -> shop_supplier | AlterModelTable(supplier)",
            ]
        );
    }

    #[test]
    fn managed_toggles_with_alter_model_options() {
        let text = "        migrations.AlterModelOptions(\n            name='product',\n            options={'managed': False},\n        ),
        migrations.RemoveField(model_name='product', name='legacy_sku'),
        migrations.AlterModelOptions(name='archive', options={'verbose_name': 'archive'}),
        migrations.RemoveField(model_name='archive', name='note'),
";
        assert_eq!(
            second(text),
            ["drop_column shop_archive [\"note\"] pk=[\"id\"] | RemoveField(archive.note)"]
        );
    }

    #[test]
    fn rename_field_variants() {
        let text = "        migrations.RenameField(\n            model_name='product',\n            old_name='legacy_sku',\n            new_name='sku',\n        ),
        migrations.RenameField(model_name='product', old_name='code', new_name='short_code'),
        migrations.RenameField(model_name='product', old_name='owner', new_name='creator'),
        migrations.RenameField(model_name='product', old_name='watchers', new_name='followers'),
        migrations.RenameField(model_name='product', old_name='labels', new_name='tags'),
        migrations.RenameField(model_name='productproxy', old_name='x', new_name='y'),
";
        assert_eq!(
            second(text),
            [
                "rename_column shop_product [\"legacy_sku\"] pk=[\"id\"] -> sku | RenameField(product.legacy_sku, sku)",
                "rename_column shop_product [\"owner_id\"] pk=[\"id\"] -> creator_id | RenameField(product.owner, creator)",
                "rename_table shop_product_watchers pk=[\"id\"] -> shop_product_followers | RenameField(product.watchers, followers)",
            ]
        );
    }

    #[test]
    fn alter_field_column_changes() {
        let text = "        migrations.AlterField(\n            model_name='product',\n            name='legacy_sku',\n            field=models.CharField(db_column='sku_old', max_length=30),\n        ),
        migrations.AlterField(model_name='product', name='code', field=models.CharField(max_length=8, db_column='CODE')),
        migrations.AlterField(model_name='product', name='owner', field=models.IntegerField()),
        migrations.AlterField(model_name='product', name='supplier', field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to='shop.supplier')),
        migrations.AlterField(model_name='product', name='labels', field=models.ManyToManyField(db_table='labels', to='shop.supplier')),
";
        assert_eq!(
            second(text),
            [
                "rename_column shop_product [\"legacy_sku\"] pk=[\"id\"] -> sku_old | AlterField(product.legacy_sku)",
                "rename_column shop_product [\"owner_id\"] pk=[\"id\"] -> owner | AlterField(product.owner)",
                "rename_column shop_product [\"supplier_ref\"] pk=[\"id\"] -> supplier_id | AlterField(product.supplier)",
                "rename_table product_labels pk=[\"id\"] -> labels | AlterField(product.labels)",
            ]
        );
    }

    #[test]
    fn harmless_operations_yield_nothing() {
        let text = "        migrations.AddField(model_name='product', name='price', field=models.IntegerField(default=0)),
        migrations.AddIndex(model_name='product', index=models.Index(fields=['legacy_sku'], name='sku_idx')),
        migrations.RemoveIndex(model_name='product', name='sku_idx'),
        migrations.AddConstraint(model_name='product', constraint=models.CheckConstraint(condition=models.Q(('price__gte', 0)), name='price_pos')),
        migrations.RemoveConstraint(model_name='product', name='price_pos'),
        migrations.AlterUniqueTogether(name='product', unique_together={('legacy_sku', 'code')}),
        migrations.AlterIndexTogether(name='product', index_together=set()),
        migrations.AlterModelManagers(name='product', managers=[('objects', django.db.models.manager.Manager())]),
        migrations.AlterModelOptions(name='product', options={'ordering': ['-id']}),
        migrations.AlterField(model_name='product', name='legacy_sku', field=models.CharField(max_length=50)),
        migrations.AlterOrderWithRespectTo(name='product', order_with_respect_to='supplier'),
        migrations.RunSQL(migrations.RunSQL.noop, migrations.RunSQL.noop),
        migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop),
";
        assert_eq!(second(text), Vec::<String>::new());
    }

    #[test]
    fn run_python_and_custom_operations_are_opaque() {
        let p = Project::new();
        p.add("shop", "0001_initial", &migration(&[], INITIAL));
        let text = format!(
            "{}from myapp.operations import BackfillThing\n\n\ndef forwards_func(apps, schema_editor):\n    pass\n\n\nclass Migration(migrations.Migration):\n    dependencies = [('shop', '0001_initial')]\n    operations = [\n        migrations.RunPython(forwards_func, migrations.RunPython.noop),\n        migrations.RunPython(code=lambda apps, editor: None),\n        BackfillThing(field='x'),\n        migrations.SomethingNew(),\n    ]\n",
            super::super::testutil::HEADER
        );
        p.add("shop", "0002_change", &text);
        let a = p.analyse();
        let m = &a.migrations[1];
        let got: Vec<_> = m
            .operations
            .iter()
            .map(|o| (o.kind, o.table.clone(), o.source.as_str(), o.line))
            .collect();
        assert_eq!(
            got,
            [
                (OpKind::Opaque, None, "RunPython(forwards_func)", 18),
                (OpKind::Opaque, None, "RunPython(<lambda>)", 19),
                (OpKind::Opaque, None, "myapp.operations.BackfillThing", 20),
                (
                    OpKind::Opaque,
                    None,
                    "django.db.migrations.SomethingNew",
                    21
                ),
            ]
        );
    }

    #[test]
    fn run_sql_forms() {
        let text = r#"        migrations.RunSQL(
            sql="ALTER TABLE shop_product DROP COLUMN legacy_sku; DROP TABLE IF EXISTS suppliers;",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.RunSQL(["TRUNCATE shop_product_watchers", "DELETE FROM auth_user"]),
        migrations.RunSQL([("DELETE FROM shop_product WHERE id = %s", [1]), ("DELETE FROM shop_archive", None)]),
        migrations.RunSQL("ALTER TABLE shop_product RENAME COLUMN code TO sku"),
        migrations.RunSQL("ALTER TABLE unknown_table RENAME TO other"),
"#;
        assert_eq!(
            second(text),
            [
                "drop_column shop_product [\"legacy_sku\"] pk=[\"id\"] | RunSQL(ALTER TABLE DROP COLUMN)",
                "drop_table suppliers pk=[\"code\"] | RunSQL(DROP TABLE)",
                "truncate shop_product_watchers pk=[\"id\"] | RunSQL(TRUNCATE)",
                "truncate auth_user pk=[\"id\"] | RunSQL(DELETE without WHERE)",
                "truncate shop_archive | RunSQL(DELETE without WHERE)",
                "rename_column shop_product [\"code\"] pk=[\"id\"] -> sku | RunSQL(ALTER TABLE RENAME COLUMN)",
                "rename_table unknown_table -> other | RunSQL(ALTER TABLE RENAME TO)",
            ]
        );
    }

    #[test]
    fn unparseable_run_sql_is_opaque_and_a_problem() {
        let p = project(
            "        migrations.RunSQL(\n            'DROP TABLE ((( oops',\n        ),\n        migrations.RunSQL(sql=SQL_FROM_ELSEWHERE),\n",
        );
        let a = p.analyse();
        let got: Vec<_> = a.migrations[1]
            .operations
            .iter()
            .map(|o| (o.kind, o.line))
            .collect();
        assert_eq!(got, [(OpKind::Opaque, 15), (OpKind::Opaque, 18)]);
        let lines: Vec<_> = a.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [15, 18]);
        assert!(
            a.problems[0].message.contains("SQL does not parse"),
            "{:?}",
            a.problems
        );
    }

    #[test]
    fn run_sql_state_operations_change_the_state_only() {
        let text = "        migrations.RunSQL(
            sql='ALTER TABLE shop_product RENAME TO items',
            state_operations=[
                migrations.AlterModelTable(name='product', table='items'),
            ],
        ),
        migrations.RemoveField(model_name='product', name='legacy_sku'),
";
        assert_eq!(
            second(text),
            [
                "rename_table shop_product pk=[\"id\"] -> items | RunSQL(ALTER TABLE RENAME TO)",
                "drop_column items [\"legacy_sku\"] pk=[\"id\"] | RemoveField(product.legacy_sku)",
            ]
        );
    }

    #[test]
    fn separate_database_and_state() {
        let text = "        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='Supplier'),
                migrations.RemoveField(model_name='product', name='legacy_sku'),
            ],
            database_operations=[
                migrations.RemoveField(model_name='product', name='code'),
                migrations.RunSQL('DROP TABLE shop_legacy'),
            ],
        ),
        migrations.DeleteModel(name='Product'),
";
        // State-only operations drop nothing; database operations see the
        // state before them; later operations see the state operations' result.
        assert_eq!(
            second(text),
            [
                "drop_column shop_product [\"CODE\"] pk=[\"id\"] | RemoveField(product.code)",
                "drop_table shop_legacy | RunSQL(DROP TABLE)",
                "drop_table shop_product pk=[\"id\"] | DeleteModel(Product)",
                "drop_table shop_product_watchers pk=[\"id\"] | DeleteModel(Product) M2M watchers",
                "drop_table shop_product_similar pk=[\"id\"] | DeleteModel(Product) M2M similar",
                "drop_table product_labels pk=[\"id\"] | DeleteModel(Product) M2M labels",
            ]
        );
    }

    #[test]
    fn unknown_models_get_best_effort_operations_and_problems() {
        let p = project(
            "        migrations.RemoveField(model_name='ghost', name='x'),\n        migrations.DeleteModel(name='Ghost'),\n        migrations.RemoveField(model_name='product', name='nope'),\n",
        );
        let a = p.analyse();
        assert_eq!(
            ops(&a, "shop.0002_change"),
            [
                "drop_column shop_ghost [\"x\"] | RemoveField(ghost.x)",
                "drop_table shop_ghost | DeleteModel(Ghost)",
                "drop_column shop_product [\"nope\"] pk=[\"id\"] | RemoveField(product.nope)",
            ]
        );
        assert_eq!(a.problems.len(), 3, "{:?}", a.problems);
    }

    #[test]
    fn malformed_operations_are_opaque_problems() {
        let p = project(
            "        migrations.RemoveField(model_name='product'),\n        migrations.RenameModel(old_name=1, new_name='X'),\n",
        );
        let a = p.analyse();
        assert_eq!(
            ops(&a, "shop.0002_change"),
            [
                "opaque - | django.db.migrations.RemoveField",
                "opaque - | django.db.migrations.RenameModel"
            ]
        );
        let messages: Vec<_> = a
            .problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                (
                    15,
                    "django.db.migrations.RemoveField: argument(s) name missing or not a string"
                ),
                (
                    16,
                    "django.db.migrations.RenameModel: argument(s) old_name missing or not a string"
                ),
            ]
        );
    }

    #[test]
    fn composite_primary_key() {
        let p = Project::new();
        p.add(
            "shop",
            "0001_initial",
            &migration(
                &[],
                "        migrations.CreateModel(
            name='OrderLine',
            fields=[
                ('pk', models.CompositePrimaryKey('order', 'line', blank=True, editable=False, primary_key=True, serialize=False)),
                ('order', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to='shop.order')),
                ('line', models.IntegerField()),
                ('qty', models.IntegerField()),
            ],
        ),
        migrations.RemoveField(model_name='orderline', name='qty'),
",
            ),
        );
        assert_eq!(
            ops(&p.analyse(), "shop.0001_initial"),
            [
                "drop_column shop_orderline [\"qty\"] pk=[\"order_id\", \"line\"] | RemoveField(orderline.qty)"
            ]
        );
    }

    #[test]
    fn positional_arguments_work_too() {
        let text = "        migrations.RemoveField('product', 'legacy_sku'),\n        migrations.RenameField('product', 'code', 'c'),\n        migrations.DeleteModel('Supplier'),\n";
        assert_eq!(
            second(text),
            [
                "drop_column shop_product [\"legacy_sku\"] pk=[\"id\"] | RemoveField(product.legacy_sku)",
                "drop_table suppliers pk=[\"code\"] | DeleteModel(Supplier)",
            ]
        );
    }

    #[test]
    fn squash_operations_are_replayed_instead_of_replaced_ones() {
        let p = Project::new();
        p.add("shop", "0001_initial", &migration(&[], INITIAL));
        p.add(
            "shop",
            "0002_drop_sku",
            &migration(
                &[("shop", "0001_initial")],
                "        migrations.RemoveField(model_name='product', name='legacy_sku'),\n",
            ),
        );
        let squash = migration(&[], &format!("{INITIAL}        migrations.RemoveField(model_name='product', name='legacy_sku'),\n"))
            .replace("    dependencies = [", "    replaces = [('shop', '0001_initial'), ('shop', '0002_drop_sku')]\n\n    dependencies = [");
        p.add("shop", "0001_squashed_0002_drop_sku", &squash);
        p.add(
            "shop",
            "0003_more",
            &migration(
                &[("shop", "0002_drop_sku")],
                "        migrations.DeleteModel(name='Supplier'),\n",
            ),
        );

        let a = p
            .try_analyse(Engine::Postgres, &[])
            .unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<_> = a
            .migrations
            .iter()
            .map(|m| (m.id.to_string(), m.applied, m.replaces.len()))
            .collect();
        assert_eq!(
            ids,
            [
                ("shop.0001_squashed_0002_drop_sku".to_string(), false, 2),
                ("shop.0003_more".to_string(), false, 0)
            ]
        );
        assert_eq!(
            a.migrations[1].previous.as_deref(),
            Some("0001_squashed_0002_drop_sku")
        );

        let a = p
            .try_analyse(Engine::Postgres, &[("shop", "0001_initial")])
            .unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<_> = a
            .migrations
            .iter()
            .map(|m| (m.id.to_string(), m.applied))
            .collect();
        assert_eq!(
            ids,
            [
                ("shop.0001_initial".to_string(), true),
                ("shop.0002_drop_sku".to_string(), false),
                ("shop.0003_more".to_string(), false)
            ]
        );
        let pending: Vec<_> = a
            .pending_operations()
            .map(super::super::testutil::show)
            .collect();
        assert_eq!(
            pending,
            [
                "drop_column shop_product [\"legacy_sku\"] pk=[\"id\"] | RemoveField(product.legacy_sku)",
                "drop_table suppliers pk=[\"code\"] | DeleteModel(Supplier)",
            ]
        );
    }

    #[test]
    fn operations_serialise_as_documented() {
        let a = project("        migrations.RemoveField(model_name='product', name='owner'),\n")
            .analyse();
        let json = serde_json::to_value(&a.migrations[1]).unwrap_or_default();
        let op = &json["operations"][0];
        assert_eq!(op["kind"], "drop_column");
        assert_eq!(op["table"], "shop_product");
        assert_eq!(op["columns"][0], "owner_id");
        assert_eq!(op["migration"]["app"], "shop");
        assert_eq!(op["source"], "RemoveField(product.owner)");
        assert_eq!(op["line"], 15);
        assert!(op.get("schema").is_none());
        assert_eq!(json["previous"], "0001_initial");
    }
}
