//! `dropguard incidents list|show|approve|dismiss`, through the running daemon's
//! API (`server.listen`, with `server.api_token`): the daemon owns the
//! incidents. `list` and `show` read the journal in the state directory when
//! the daemon is not running, and say so.

use std::io::Write;

use anyhow::Context;

use super::rfc3339;
use crate::actions::workflow;
use crate::config::Config;
use crate::detect::incident::{
    Change, DeployedMigration, Incident, RestoreRun, RunStatus, StepStatus,
};
use crate::incidents::Store;

pub enum Action {
    List,
    Show(String),
}

pub async fn run(
    config: &Config,
    action: &Action,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let api = Api::new(config)?;
    let store = Store::new(&config.state.dir);
    let journal_note = |err: &anyhow::Error| {
        eprintln!(
            "note: {err:#}; showing the journal in {} instead",
            store.dir().display()
        );
    };
    match action {
        Action::List => {
            let incidents: Vec<Incident> = match api.get("/api/v1/incidents").await {
                Ok(Reached::Answer(value)) => serde_json::from_value(value)
                    .context("the daemon's incident list is not what this dropguard reads")?,
                Ok(Reached::Refused(message)) => anyhow::bail!("the daemon refused: {message}"),
                Err(err) => {
                    journal_note(&err);
                    let mut incidents = store.load_all().with_context(|| {
                        format!("reading the incident journal in {}", store.dir().display())
                    })?;
                    // Newest first, as the API lists them.
                    incidents.reverse();
                    incidents
                }
            };
            if json {
                serde_json::to_writer_pretty(&mut *out, &incidents)?;
                writeln!(out)?;
            } else if incidents.is_empty() {
                writeln!(out, "No incidents.")?;
            } else {
                list(&incidents, out)?;
            }
        }
        Action::Show(id) => {
            let id = crate::incidents::canonical_id(id)?;
            let incident: Incident = match api.get(&format!("/api/v1/incidents/{id}")).await {
                Ok(Reached::Answer(value)) => serde_json::from_value(value)
                    .context("the daemon's incident is not what this dropguard reads")?,
                Ok(Reached::Refused(message)) => anyhow::bail!("{message}"),
                Err(err) => {
                    journal_note(&err);
                    store.load(&id)?.with_context(|| {
                        format!(
                            "no incident {id} in {}; `dropguard incidents list` shows the ones there",
                            store.dir().display()
                        )
                    })?
                }
            };
            if json {
                serde_json::to_writer_pretty(&mut *out, &incident)?;
                writeln!(out)?;
            } else {
                show(&incident, out)?;
            }
        }
    }
    Ok(0)
}

fn list(incidents: &[Incident], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<26}  {:<9}  {:<20}  HEADLINE",
        "ID", "STATE", "OPENED"
    )?;
    for incident in incidents {
        writeln!(
            out,
            "{:<26}  {:<9}  {:<20}  {}",
            incident.id,
            incident.state.as_str(),
            rfc3339(incident.opened_at.into()),
            printable(&incident.headline)
        )?;
    }
    Ok(())
}

fn show(incident: &Incident, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{}", printable(&incident.headline))?;
    writeln!(out)?;
    writeln!(out, "incident     {}", incident.id)?;
    writeln!(out, "state        {}", incident.state.as_str())?;
    writeln!(out, "environment  {}", printable(&incident.environment))?;
    writeln!(out, "opened       {}", rfc3339(incident.opened_at.into()))?;
    writeln!(out, "updated      {}", rfc3339(incident.updated_at.into()))?;
    let triggers: Vec<&str> = incident.triggers.iter().map(|t| t.as_str()).collect();
    writeln!(out, "triggers     {}", triggers.join(", "))?;
    writeln!(out, "errors       {}", incident.errors)?;

    let deploy = &incident.deploy;
    let origins: Vec<&str> = deploy.origins.iter().map(|o| o.as_str()).collect();
    writeln!(out)?;
    write!(
        out,
        "deploy at {} (seen by {})",
        rfc3339(deploy.at.into()),
        origins.join(", ")
    )?;
    match &deploy.release {
        Some(release) => writeln!(out, ", release {}", printable(release))?,
        None => writeln!(out)?,
    }
    for migration in &deploy.migrations {
        deployed_migration(migration, out)?;
    }

    if !incident.objects.is_empty() {
        writeln!(out)?;
        writeln!(out, "errors by object")?;
        for object in &incident.objects {
            let name = match &object.column {
                Some(column) => format!("{}.{column}", object.table),
                None => format!("table {}", object.table),
            };
            writeln!(
                out,
                "  {} ({} by {}): {} errors, first {}, last {}, from {}",
                printable(&name),
                change(object.change),
                printable(&object.migration),
                object.errors,
                rfc3339(object.first_seen.into()),
                rfc3339(object.last_seen.into()),
                printable(&object.sources.join(", "))
            )?;
        }
    }
    if !incident.rates.is_empty() {
        writeln!(out)?;
        writeln!(out, "error rates")?;
        for rate in &incident.rates {
            writeln!(
                out,
                "  {}: {:.3}/s against {:.3}/s before the deploy",
                printable(&rate.series),
                rate.per_second,
                rate.baseline_per_second
            )?;
        }
    }
    if !incident.samples.is_empty() {
        writeln!(out)?;
        writeln!(out, "samples")?;
        for sample in &incident.samples {
            writeln!(
                out,
                "  {}  {}",
                rfc3339(sample.at.into()),
                printable(&sample.source)
            )?;
            for line in sample.text.lines() {
                writeln!(out, "    {}", printable(line))?;
            }
        }
    }
    if let Some(run) = &incident.restore {
        restore_run(run, out)?;
    }
    writeln!(out)?;
    writeln!(out, "history")?;
    for step in &incident.history {
        writeln!(
            out,
            "  {}  {:<9}  {}",
            rfc3339(step.at.into()),
            step.state.as_str(),
            printable(&step.note)
        )?;
    }
    Ok(())
}

fn restore_run(run: &RestoreRun, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "restore      {} (asked by {} at {}{})",
        run_status(run.status),
        printable(&run.requested_by),
        rfc3339(run.requested_at.into()),
        if run.force { ", forced" } else { "" }
    )?;
    for step in &run.steps {
        writeln!(
            out,
            "  {:<7}  {}",
            step_status(step.status),
            printable(&workflow::describe(&step.action))
        )?;
        if let Some(detail) = &step.detail {
            writeln!(out, "           {}", printable(detail))?;
        }
        if let Some(command) = step.command.as_ref().filter(|c| !c.output.is_empty()) {
            for line in command.output.lines() {
                writeln!(out, "           | {}", printable(line))?;
            }
        }
    }
    if let Some(error) = &run.error {
        writeln!(out, "  failed: {}", printable(error))?;
    }
    Ok(())
}

fn run_status(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "running",
        RunStatus::Failed => "failed",
        RunStatus::Done => "done",
    }
}

fn step_status(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "pending",
        StepStatus::Running => "running",
        StepStatus::Done => "done",
        StepStatus::Failed => "FAILED",
    }
}

fn deployed_migration(migration: &DeployedMigration, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "  {}{}",
        printable(&migration.migration),
        if migration.destructive {
            "  (destructive)"
        } else {
            ""
        }
    )?;
    for object in &migration.objects {
        let name = if object.columns.is_empty() {
            format!("table {}", object.table)
        } else {
            format!("{}.{}", object.table, object.columns.join(","))
        };
        writeln!(out, "    {}: {}", change(object.change), printable(&name))?;
    }
    for used in &migration.in_use {
        let name = match &used.column {
            Some(column) => format!("{}.{column}", used.table),
            None => format!("table {}", used.table),
        };
        writeln!(
            out,
            "    still in use when applied: {} (usage check at {}: {})",
            printable(&name),
            used.checked_at.format("%Y-%m-%dT%H:%M:%SZ"),
            printable(&used.evidence)
        )?;
    }
    match &migration.rollback_command {
        Some(command) => writeln!(out, "    rollback: {}", printable(command))?,
        None => match &migration.previous {
            Some(previous) => writeln!(out, "    rollback to: {}", printable(previous))?,
            None => writeln!(out, "    rollback: unknown")?,
        },
    }
    match &migration.snapshot {
        Some(snapshot) => writeln!(
            out,
            "    snapshot: {} ({} rows); after the rollback: dropguard restore --snapshot {}",
            printable(&snapshot.id),
            snapshot.rows,
            printable(&snapshot.id)
        )?,
        None if migration.destructive => {
            writeln!(
                out,
                "    snapshot: none, its dropped data was not preserved"
            )?;
        }
        None => {}
    }
    Ok(())
}

fn change(change: Change) -> &'static str {
    match change {
        Change::Dropped => "dropped",
        Change::Renamed => "renamed",
    }
}

/// Text from logs and the journal, with control characters (a terminal's escape
/// sequences among them) shown escaped instead of acted on.
fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The daemon's API as the CLI reaches it.
struct Api {
    base: String,
    /// `server.listen` as configured.
    addr: std::net::SocketAddr,
    token: Option<String>,
    client: reqwest::Client,
}

/// What the daemon answered.
enum Reached {
    Answer(serde_json::Value),
    /// A 4xx/5xx with the daemon's message.
    Refused(String),
}

impl Api {
    fn new(config: &Config) -> anyhow::Result<Self> {
        // The configured address decides whether a token is needed; a wildcard
        // one is reached on loopback.
        let addr = config.server.listen;
        let mut reach = addr;
        if reach.ip().is_unspecified() {
            reach.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Ok(Self {
            base: format!("http://{reach}"),
            addr,
            token: config
                .server
                .api_token
                .as_ref()
                .map(|t| t.expose().to_string()),
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(15))
                .build()
                .context("building the HTTP client")?,
        })
    }

    /// A read: off loopback the daemon wants the token for it too.
    async fn get(&self, path: &str) -> anyhow::Result<Reached> {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    /// A mutating call: it needs the token unless the daemon listens on loopback.
    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<Reached> {
        if self.token.is_none() && !self.addr.ip().is_loopback() {
            anyhow::bail!(
                "this goes through the daemon's API, which on {} needs server.api_token in the configuration",
                self.addr
            );
        }
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Reached> {
        let response = request.send().await.map_err(|err| {
            anyhow::anyhow!(
                "cannot reach the daemon at {} (server.listen): is `dropguard run` running? ({})",
                self.base,
                crate::error_chain(&err.without_url())
            )
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the daemon's answer ({status})"))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("the daemon's answer ({status}) is not JSON"))?;
        if status.is_success() {
            Ok(Reached::Answer(body))
        } else {
            Ok(Reached::Refused(
                body["error"].as_str().unwrap_or("no message").to_string(),
            ))
        }
    }
}

/// `dropguard incidents dismiss ID`: `POST /api/v1/incidents/ID/dismiss`.
pub async fn dismiss(
    config: &Config,
    id: &str,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let id = crate::incidents::canonical_id(id)?;
    let api = Api::new(config)?;
    let body = match api
        .post(
            &format!("/api/v1/incidents/{id}/dismiss"),
            serde_json::json!({}),
        )
        .await?
    {
        Reached::Answer(body) => body,
        Reached::Refused(message) => anyhow::bail!("the daemon refused: {message}"),
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &body)?;
        writeln!(out)?;
    } else {
        writeln!(out, "Incident {id} dismissed.")?;
    }
    Ok(0)
}

/// How often `approve` asks how the restore is going.
const POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// `dropguard incidents approve ID [--force]`: `POST /api/v1/incidents/ID/restore`,
/// then the steps followed as the daemon runs them, until the restore is done
/// (exit 0) or a step failed (exit 1, with the reason and what to do).
pub async fn approve(
    config: &Config,
    id: &str,
    force: bool,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<u8> {
    let id = crate::incidents::canonical_id(id)?;
    let api = Api::new(config)?;
    let path = format!("/api/v1/incidents/{id}");
    let mut incident = match api
        .post(
            &format!("{path}/restore"),
            serde_json::json!({ "force": force }),
        )
        .await?
    {
        Reached::Answer(body) => body,
        Reached::Refused(message) => anyhow::bail!("the daemon refused: {message}"),
    };
    if !json {
        writeln!(
            out,
            "Restore of incident {id} approved; the daemon runs it (Ctrl-C stops watching, not the restore)."
        )?;
    }
    let mut shown = 0;
    loop {
        let parsed: Incident = serde_json::from_value(incident.clone())
            .context("the daemon's incident is not what this dropguard reads")?;
        let Some(run) = &parsed.restore else {
            anyhow::bail!("the daemon accepted the approval but the incident has no restore");
        };
        if !json {
            // Each step once, when it is over.
            let over: Vec<_> = run
                .steps
                .iter()
                .take_while(|s| matches!(s.status, StepStatus::Done | StepStatus::Failed))
                .collect();
            for step in over.iter().skip(shown) {
                writeln!(
                    out,
                    "  {:<7}  {}{}",
                    step_status(step.status),
                    printable(&workflow::describe(&step.action)),
                    step.detail
                        .as_deref()
                        .map(|d| format!(": {}", printable(d)))
                        .unwrap_or_default()
                )?;
            }
            shown = shown.max(over.len());
            out.flush()?;
        }
        match run.status {
            RunStatus::Running => {}
            RunStatus::Done => {
                if json {
                    serde_json::to_writer_pretty(&mut *out, &incident)?;
                    writeln!(out)?;
                } else {
                    writeln!(
                        out,
                        "Incident {id} restored: the data is back and verified."
                    )?;
                }
                return Ok(0);
            }
            RunStatus::Failed => {
                if json {
                    serde_json::to_writer_pretty(&mut *out, &incident)?;
                    writeln!(out)?;
                } else {
                    writeln!(
                        out,
                        "The restore stopped: {}\nFix that, then approve again: it resumes at the failed step.",
                        printable(run.error.as_deref().unwrap_or("no reason given"))
                    )?;
                }
                return Ok(super::EXIT_FINDINGS);
            }
        }
        tokio::time::sleep(POLL).await;
        incident = match api.get(&path).await? {
            Reached::Answer(body) => body,
            Reached::Refused(message) => anyhow::bail!("the daemon refused: {message}"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_from_logs_are_shown_not_run() {
        assert_eq!(printable("plain text"), "plain text");
        assert_eq!(printable("red \u{1b}[31m"), "red \\u{1b}[31m");
    }
}
