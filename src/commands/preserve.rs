//! `dropguard preserve`: a snapshot of the plan's at-risk data, or of one table.

use std::io::Write;

use anyhow::Context;

use super::open_vault;
use crate::actions::preserve::{self, Preserved, Request, Target};
use crate::config::Config;
use crate::db;
use crate::plan;
use crate::vault::{ObjectKind, Reason};

pub struct Args {
    pub migration: Option<String>,
    pub table: Option<String>,
    pub columns: Vec<String>,
    pub json: bool,
}

pub async fn run(config: &Config, args: &Args, out: &mut dyn Write) -> anyhow::Result<u8> {
    let vault = open_vault(config).context("opening the vault")?;
    let remote = super::remote(config)?;
    let db = db::open(&config.database).await?;
    let mut notes = Vec::new();
    let requests = match &args.table {
        Some(table) => vec![Request {
            migration: None,
            rollback_command: None,
            reason: Reason::AdHoc,
            environment: config.environment.clone(),
            targets: vec![Target {
                table: table.clone(),
                columns: args.columns.clone(),
            }],
        }],
        None => {
            let plan = plan::pending(config, db.as_ref()).await?;
            if let Some(wanted) = &args.migration
                && !plan.migrations.iter().any(|m| &m.migration == wanted)
            {
                db.close().await;
                anyhow::bail!(
                    "migration {wanted} has no pending destructive operation; `dropguard scan` lists the plan"
                );
            }
            let (requests, skipped) = preserve::plan_requests(&plan, args.migration.as_deref());
            notes.extend(skipped);
            requests
        }
    };
    let mut taken: Vec<Preserved> = Vec::new();
    for request in &requests {
        let preserved = crate::progress::track(
            crate::progress::Progress::for_terminal(args.json),
            preserve::preserve_once(db.as_ref(), &vault, remote.as_ref(), request),
        )
        .await;
        match preserved {
            Ok(preserved) => taken.push(preserved),
            Err(err) => {
                db.close().await;
                return Err(err).context("preserving");
            }
        }
    }
    db.close().await;
    for note in &notes {
        tracing::warn!(note = %note, "not preserved");
    }
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &taken)?;
        writeln!(out)?;
    } else {
        if taken.is_empty() {
            writeln!(
                out,
                "Nothing at risk in the pending migrations: no snapshot taken."
            )?;
        }
        for note in &notes {
            writeln!(out, "note: {note}")?;
        }
        for p in &taken {
            if p.reused {
                writeln!(
                    out,
                    "snapshot {} ({}): taken by another dropguard instance while this one waited",
                    p.id,
                    p.migration.as_deref().unwrap_or("ad hoc")
                )?;
            } else {
                writeln!(
                    out,
                    "snapshot {} ({}): {} rows in {:.2}s, {} bytes compressed",
                    p.id,
                    p.migration.as_deref().unwrap_or("ad hoc"),
                    p.rows,
                    p.seconds,
                    p.compressed_bytes
                )?;
            }
            for o in &p.objects {
                let kind = if o.columns.is_empty() {
                    ObjectKind::Table
                } else {
                    ObjectKind::Columns
                };
                let what = super::describe(&o.table, kind, &o.columns);
                writeln!(out, "  {what}: {} rows", o.rows)?;
            }
        }
    }
    Ok(0)
}
