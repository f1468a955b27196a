//! `dropguard restore --snapshot ID [--dry-run] [--force] [--json]`.

use std::io::Write;

use anyhow::Context;

use super::{EXIT_FINDINGS, describe, open_vault_for_reading};
use crate::actions::restore::{self, Options, Verification};
use crate::config::Config;
use crate::db;
use crate::vault::SnapshotId;

pub struct Args {
    pub snapshot: String,
    pub dry_run: bool,
    pub force: bool,
    pub json: bool,
}

pub async fn run(config: &Config, args: &Args, out: &mut dyn Write) -> anyhow::Result<u8> {
    let id = SnapshotId::parse(&args.snapshot).with_context(|| {
        format!(
            "{:?} is not a snapshot id; `dropguard snapshots list` shows them",
            args.snapshot
        )
    })?;
    let vault = open_vault_for_reading(config).await?;
    let db = db::open(&config.database).await?;
    let options = Options {
        dry_run: args.dry_run,
        force: args.force,
    };
    let report = crate::progress::track(
        crate::progress::Progress::for_terminal(args.json),
        restore::restore(db.as_ref(), &vault, &id, &config.environment, options),
    )
    .await;
    db.close().await;
    let report = report.with_context(|| format!("restoring snapshot {id}"))?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        let verb = if report.dry_run {
            "would restore"
        } else {
            "restored"
        };
        writeln!(
            out,
            "snapshot {} ({}): {verb}",
            report.snapshot,
            report.migration.as_deref().unwrap_or("ad hoc")
        )?;
        for o in &report.objects {
            let what = describe(&o.table, o.kind, &o.columns);
            let verified = match &o.verification {
                Verification::Checksum => "verified: checksum matches the snapshot".to_string(),
                Verification::Compared { rows } => {
                    format!("verified: {rows} rows equal the snapshot")
                }
                Verification::NotRun => "dry run: nothing written".to_string(),
            };
            writeln!(
                out,
                "  {what}: {} of {} rows written, {} already equal, {} conflicts, {} missing; {verified}",
                o.written, o.snapshot_rows, o.unchanged, o.conflicts, o.missing
            )?;
        }
        if report.unresolved() > 0 && !args.force {
            writeln!(
                out,
                "{} rows changed or vanished since the snapshot and were left alone; --force overwrites changed rows",
                report.unresolved()
            )?;
        }
    }
    Ok(if report.unresolved() > 0 {
        EXIT_FINDINGS
    } else {
        0
    })
}
