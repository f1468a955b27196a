//! `dropguard snapshots list|show|verify`.

use std::io::Write;

use anyhow::Context;
use serde_json::json;

use super::{EXIT_FINDINGS, describe, open_vault_for_reading, rfc3339};
use crate::config::Config;
use crate::vault::{ObjectStatus, SnapshotId};

pub enum Action {
    List,
    Show(String),
    Verify(String),
}

fn parse_id(text: &str) -> anyhow::Result<SnapshotId> {
    SnapshotId::parse(text).with_context(|| {
        format!("{text:?} is not a snapshot id; `dropguard snapshots list` shows them")
    })
}

pub async fn run(
    config: &Config,
    action: &Action,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let vault = open_vault_for_reading(config).await?;
    match action {
        Action::List => {
            let entries = vault.list().context("listing snapshots")?;
            if json {
                let items: Vec<_> = entries.iter().map(|e| e.listing()).collect();
                serde_json::to_writer_pretty(&mut *out, &items)?;
                writeln!(out)?;
            } else if entries.is_empty() {
                writeln!(out, "No snapshots in {}.", vault.path().display())?;
            } else {
                for e in &entries {
                    let objects: Vec<String> = e
                        .objects
                        .iter()
                        .map(|o| {
                            format!(
                                "{} ({} rows)",
                                describe(&o.table, o.kind, &o.columns),
                                o.rows
                            )
                        })
                        .collect();
                    let state = if e.complete {
                        "complete".to_string()
                    } else {
                        format!("INCOMPLETE: {}", e.problem.as_deref().unwrap_or("unusable"))
                    };
                    writeln!(
                        out,
                        "{}  {}  {:<40}  {}  {}",
                        e.id,
                        rfc3339(e.created_at),
                        e.migration.as_deref().unwrap_or("(ad hoc)"),
                        state,
                        objects.join("; ")
                    )?;
                }
            }
            Ok(0)
        }
        Action::Show(id) => {
            let manifest = vault.show(&parse_id(id)?)?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &manifest)?;
                writeln!(out)?;
            } else {
                writeln!(out, "snapshot     {}", manifest.id)?;
                writeln!(
                    out,
                    "migration    {}",
                    manifest.migration.as_deref().unwrap_or("(ad hoc)")
                )?;
                writeln!(out, "environment  {}", manifest.environment)?;
                writeln!(
                    out,
                    "database     {} {}",
                    manifest.database.kind, manifest.database.server_version
                )?;
                writeln!(out, "created      {}", rfc3339(manifest.created_at))?;
                writeln!(out, "completed    {}", rfc3339(manifest.completed_at))?;
                for object in &manifest.objects {
                    writeln!(
                        out,
                        "  {}: {} rows, key {}, {} ({} bytes compressed)",
                        describe(&object.table, object.kind, &object.columns),
                        object.rows,
                        object.primary_key.join(","),
                        object.checksum().sum_text(),
                        object.compressed_bytes
                    )?;
                }
            }
            Ok(0)
        }
        Action::Verify(id) => {
            let report = vault.verify(&parse_id(id)?)?;
            if json {
                let objects: Vec<_> = report
                    .objects
                    .iter()
                    .map(|o| json!({ "table": o.table, "ok": matches!(o.status, ObjectStatus::Ok), "status": o.status.to_string() }))
                    .collect();
                serde_json::to_writer_pretty(
                    &mut *out,
                    &json!({ "id": report.id.to_string(), "ok": report.is_ok(), "objects": objects }),
                )?;
                writeln!(out)?;
            } else {
                for o in &report.objects {
                    writeln!(out, "{:<40} {}", o.table, o.status)?;
                }
                writeln!(
                    out,
                    "snapshot {}: {}",
                    report.id,
                    if report.is_ok() {
                        "verified, every checksum matches"
                    } else {
                        "DAMAGED: do not restore from it"
                    }
                )?;
            }
            Ok(if report.is_ok() { 0 } else { EXIT_FINDINGS })
        }
    }
}
