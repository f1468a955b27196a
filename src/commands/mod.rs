//! The CLI commands that do more than start the daemon: each takes the checked
//! configuration and a writer for its output, and returns the exit status. `main.rs`
//! picks the command; nothing here parses arguments or exits.

pub mod gate;
pub mod incidents;
pub mod preserve;
pub mod replay;
pub mod restore;
pub mod scan;
pub mod snapshots;

use std::path::PathBuf;

use crate::config::Config;
use crate::vault::{ObjectKind, Remote, RemoteConfig, RemoteError, Vault, VaultError};

/// Exit status of a command that ran but found what the user asked to fail on
/// (`scan --strict` with unreadable migrations, `snapshots verify` with damage).
pub const EXIT_FINDINGS: u8 = 1;

/// Where snapshots live: `<state.dir>/vault`.
pub fn vault_dir(config: &Config) -> PathBuf {
    config.state.dir.join("vault")
}

/// Opens (creating if needed) the configured vault.
pub fn open_vault(config: &Config) -> Result<Vault, VaultError> {
    Vault::open(vault_dir(config))
}

/// The configured object-store mirror of the vault, if any.
pub fn remote(config: &Config) -> Result<Option<Remote>, RemoteError> {
    let Some(url) = &config.vault.url else {
        return Ok(None);
    };
    Remote::new(&RemoteConfig {
        url: url.expose().to_string(),
        endpoint: config.vault.endpoint.clone(),
        region: config.vault.region.clone(),
        allow_http: config.vault.allow_http,
    })
    .map(Some)
}

/// The vault for a command that only reads it (`snapshots list|show|verify`,
/// `restore`, whose lock is the database's):
/// opened and synced as usual, or, when the local vault exists but cannot be
/// opened for writing (its filesystem went read-only, say), read as it stands.
/// A snapshot half-written there is still never listed complete. A mirror that
/// cannot be reached is an error either way, as for every other command.
pub async fn open_vault_for_reading(config: &Config) -> anyhow::Result<Vault> {
    let vault = match open_vault(config) {
        Ok(vault) => vault,
        Err(err) => match Vault::open_read_only(vault_dir(config)) {
            Ok(vault) => {
                tracing::warn!(error = %err, "the vault cannot be opened for writing; reading it as it stands");
                return Ok(vault);
            }
            Err(_) => return Err(anyhow::Error::new(err).context("opening the vault")),
        },
    };
    sync(config, vault).await
}

/// Brings into `vault` what the configured mirror has that it lacks.
async fn sync(config: &Config, vault: Vault) -> anyhow::Result<Vault> {
    use anyhow::Context;
    if let Some(remote) = remote(config)? {
        remote
            .fetch_missing(&vault)
            .await
            .context("fetching snapshots from the vault's object store")?;
    }
    Ok(vault)
}

/// How an object is named to the operator: `table t`, or `t.a,b` for columns.
pub fn describe(table: &str, kind: ObjectKind, columns: &[String]) -> String {
    match kind {
        ObjectKind::Table => format!("table {table}"),
        ObjectKind::Columns => format!("{table}.{}", columns.join(",")),
    }
}

/// RFC 3339 UTC, seconds precision: how times are shown and put in JSON.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
