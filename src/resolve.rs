//! What a deploy did: the tables and columns its migrations dropped or renamed,
//! read from the migration files (once applied, the database no longer shows
//! them), and the snapshot that preserved each migration's data.
//!
//! It joins the analysis (`plan`) and the vault for the detector, which sees
//! neither; it never changes anything.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::config::Config;
use crate::detect::incident::{Change, DeployInfo, DeployedMigration, DroppedObject, SnapshotRef};
use crate::event::Deploy;
use crate::migrations::OpKind;
use crate::plan::{self, PlannedMigration};
use crate::vault::Vault;

/// Resolves `deploy`, seen at `at`. Migrations the files do not know (the
/// project directory is older than the database) resolve to nothing dropped,
/// with a warning.
pub fn deploy(
    config: &Config,
    vault: Option<&Vault>,
    deploy: &Deploy,
    at: SystemTime,
) -> DeployInfo {
    let history = match plan::history(config) {
        Ok(history) => Some(history),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the migration files; the deploy's dropped objects are unknown");
            None
        }
    };
    // By name: an announcement may name thousands of migrations.
    let planned: HashMap<&str, &PlannedMigration> = history
        .iter()
        .flat_map(|h| &h.migrations)
        .map(|m| (m.migration.as_str(), m))
        .collect();
    let migrations = deploy
        .migrations
        .iter()
        .map(|name| migration(planned.get(name.as_str()).copied(), vault, name))
        .collect();
    DeployInfo {
        at: at.into(),
        origins: vec![deploy.origin],
        release: deploy.release.clone(),
        migrations,
        more_migrations: 0,
    }
}

fn migration(
    planned: Option<&PlannedMigration>,
    vault: Option<&Vault>,
    name: &str,
) -> DeployedMigration {
    let Some(planned) = planned else {
        // Most migrations destroy nothing and are not in the plan at all.
        return DeployedMigration::plain(name);
    };
    let mut objects: Vec<DroppedObject> = Vec::new();
    let mut destructive = false;
    for op in &planned.operations {
        let o = &op.operation;
        let (change, columns) = match o.kind {
            OpKind::DropTable | OpKind::Truncate => (Change::Dropped, Vec::new()),
            OpKind::DropColumn => (Change::Dropped, o.columns.clone()),
            OpKind::RenameTable => (Change::Renamed, Vec::new()),
            OpKind::RenameColumn => (Change::Renamed, o.columns.clone()),
            OpKind::Opaque => continue,
        };
        let Some(table) = o.table.clone() else {
            continue;
        };
        destructive |= change == Change::Dropped;
        match objects
            .iter_mut()
            .find(|x| x.table == table && x.change == change)
        {
            Some(known) if known.columns.is_empty() => {}
            Some(known) if columns.is_empty() => known.columns.clear(),
            Some(known) => {
                for column in columns {
                    if !known.columns.contains(&column) {
                        known.columns.push(column);
                    }
                }
            }
            None => objects.push(DroppedObject {
                table,
                columns,
                change,
                migration: name.to_string(),
            }),
        }
    }
    let snapshot = vault.and_then(|vault| snapshot(vault, name));
    DeployedMigration {
        migration: name.to_string(),
        previous: planned.previous.clone(),
        rollback_command: planned.rollback_command.clone(),
        destructive,
        snapshot,
        objects,
        in_use: Vec::new(),
    }
}

/// The newest complete snapshot of `migration` in the vault.
pub fn snapshot(vault: &Vault, migration: &str) -> Option<SnapshotRef> {
    match vault.find_for_migration(migration) {
        Ok(found) => found.map(|manifest| SnapshotRef {
            id: manifest.id.to_string(),
            rows: manifest.objects.iter().map(|o| o.rows).sum(),
        }),
        Err(err) => {
            tracing::warn!(migration, error = %err, "cannot look for the migration's snapshot");
            None
        }
    }
}
