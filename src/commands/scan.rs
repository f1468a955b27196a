//! `dropguard scan`: the plan as a readable table or as JSON.

use std::io::Write;

use anyhow::Context;

use crate::config::Config;
use crate::db;
use crate::migrations::OpKind;
use crate::plan::{self, Plan, PlannedOperation};

pub struct Args {
    pub json: bool,
    /// Every destructive operation in history, without a database.
    pub all: bool,
    /// Exit 1 when a migration file could not be analysed.
    pub strict: bool,
}

pub async fn run(config: &Config, args: &Args, out: &mut dyn Write) -> anyhow::Result<u8> {
    let plan = if args.all {
        plan::history(config)?
    } else {
        let db = db::open(&config.database).await?;
        let plan = plan::pending(config, db.as_ref()).await;
        db.close().await;
        plan?
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &plan).context("writing the plan")?;
        writeln!(out)?;
    } else {
        write_table(&plan, out).context("writing the plan")?;
    }
    Ok(if args.strict && !plan.problems.is_empty() {
        super::EXIT_FINDINGS
    } else {
        0
    })
}

fn kind_label(kind: OpKind) -> &'static str {
    match kind {
        OpKind::DropTable => "drop table",
        OpKind::DropColumn => "drop column",
        OpKind::Truncate => "truncate",
        OpKind::RenameTable => "rename table",
        OpKind::RenameColumn => "rename column",
        OpKind::Opaque => "opaque",
    }
}

fn target(op: &PlannedOperation) -> String {
    let op = &op.operation;
    let table = op.table.as_deref().unwrap_or("?");
    let columns = op.columns.join(",");
    match (op.kind, &op.new_name) {
        (OpKind::RenameTable, Some(new)) => format!("{table} -> {new}"),
        (OpKind::RenameColumn, Some(new)) => format!("{table}.{columns} -> {new}"),
        _ if op.table.is_none() => "-".to_string(),
        _ if op.columns.is_empty() => table.to_string(),
        _ => format!("{table}.{columns}"),
    }
}

fn at_risk(op: &PlannedOperation, offline: bool) -> String {
    match (op.rows, op.operation.kind) {
        (Some(n), OpKind::DropColumn | OpKind::RenameColumn) => format!("{n} values"),
        (Some(n), _) => format!("{n} rows"),
        (None, _) if offline => String::new(),
        (None, _) => "?".to_string(),
    }
}

fn write_table(plan: &Plan, out: &mut dyn Write) -> std::io::Result<()> {
    let destructive = plan
        .operations()
        .filter(|(_, op)| {
            matches!(
                op.operation.kind,
                OpKind::DropTable | OpKind::DropColumn | OpKind::Truncate
            )
        })
        .count();
    let scope = if plan.all {
        "in the whole migration history (offline)".to_string()
    } else {
        format!(
            "pending on {} ({} {})",
            plan.environment,
            plan.engine,
            plan.server_version.as_deref().unwrap_or("")
        )
    };
    if plan.migrations.is_empty() {
        writeln!(out, "No destructive or breaking operations {scope}.")?;
    } else {
        writeln!(
            out,
            "{} migration(s) with destructive or breaking operations {scope}; {destructive} destroy data.",
            plan.migrations.len()
        )?;
    }
    let width = plan
        .operations()
        .map(|(_, op)| target(op).len())
        .max()
        .unwrap_or(0);
    for migration in &plan.migrations {
        writeln!(
            out,
            "\n{}  ({})",
            migration.migration,
            migration.file.display()
        )?;
        if let Some(command) = &migration.rollback_command
            && !plan.all
        {
            writeln!(out, "  rollback: {command}")?;
        }
        for op in &migration.operations {
            let pk = if op.operation.primary_key.is_empty() {
                String::new()
            } else {
                format!("pk {}", op.operation.primary_key.join(","))
            };
            writeln!(
                out,
                "  {:<13} {:<width$}  {:>12}  {:<10} {} (line {})",
                kind_label(op.operation.kind),
                target(op),
                at_risk(op, plan.all),
                pk,
                op.operation.source,
                op.operation.line,
            )?;
            if let Some(note) = &op.note {
                writeln!(out, "  {:<13} note: {note}", "")?;
            }
        }
    }
    if !plan.problems.is_empty() {
        writeln!(
            out,
            "\n{} migration file(s) could not be fully analysed:",
            plan.problems.len()
        )?;
        for problem in &plan.problems {
            writeln!(
                out,
                "  {}:{}: {}",
                problem.file.display(),
                problem.line,
                problem.message
            )?;
        }
    }
    Ok(())
}
