//! The restore workflow of an incident (modes `approve` and `auto`): roll the
//! schema back with `restore.rollback_command`, check it, write each preserved
//! object back, prove it, tell the receivers.
//!
//! [`plan`] lays the steps out once, when the restore is asked for; [`execute`]
//! runs them in order. Every change of a step goes to the journal (through the
//! detection task, which owns the incident) and is acknowledged before the
//! next step begins, so a crash resumes at the first step not done and never
//! repeats a finished one. A step that was running when the process died runs
//! again: each is safe to repeat (Django's `migrate` back to a target is a no-op
//! once there; a restore changes nothing the second time).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use crate::actions::alerts::{self, Alerts};
use crate::actions::restore::{self, Options, Verification};
use crate::config::Config;
use crate::db::{self, Adapter};
use crate::detect::incident::{
    CommandRun, Incident, RestoreRun, RestoredRows, RunStatus, Step, StepAction, StepStatus,
};
use crate::detect::mask;
use crate::incidents::Command;
use crate::telemetry::RestoreStats;
use crate::vault::{SnapshotId, Vault};

/// How much of the rollback command's output is kept in the incident.
const OUTPUT_CHARS: usize = 4000;
/// Bytes of each output stream read and kept while it runs (its end).
const OUTPUT_TAIL_BYTES: usize = 16 * 1024;

/// The steps of a restore of `incident`, or why it cannot have one.
pub fn plan(
    incident: &Incident,
    config: &Config,
    vault: &Vault,
    requested_by: &str,
    force: bool,
) -> Result<RestoreRun, String> {
    let destructive: Vec<_> = incident.destructive().collect();
    if destructive.is_empty() {
        return Err(
            "its deploy dropped no data (only renames); roll the code or the schema back, there is nothing to restore"
                .to_string(),
        );
    }
    if let Some(unpreserved) = destructive.iter().find(|m| m.snapshot.is_none()) {
        return Err(format!(
            "{} was applied without a snapshot, so there is no data to restore it from; roll back by hand (`{}`) and recover the data from a backup",
            unpreserved.migration,
            unpreserved
                .rollback_command
                .as_deref()
                .unwrap_or("python manage.py migrate <app> <previous>")
        ));
    }
    let template = shlex::split(&config.restore.rollback_command)
        .filter(|argv| !argv.is_empty())
        .ok_or("restore.rollback_command cannot be split into arguments; fix it with `dropguard check-config`")?;

    let mut steps = Vec::new();
    // Per app, back to before its first destructive migration of the deploy; the
    // apps in the reverse order they were migrated.
    let mut first_per_app: Vec<&crate::detect::incident::DeployedMigration> = Vec::new();
    for migration in &destructive {
        let app = app_of(&migration.migration);
        if !first_per_app.iter().any(|m| app_of(&m.migration) == app) {
            first_per_app.push(migration);
        }
    }
    for migration in first_per_app.iter().rev() {
        // Without a known previous migration (plain SQL), the schema check says
        // whether someone rolled it back by hand.
        let Some(previous) = &migration.previous else {
            continue;
        };
        let (app, name) = migration
            .migration
            .split_once('.')
            .unwrap_or(("", &migration.migration));
        let argv = template
            .iter()
            .map(|arg| {
                arg.replace("{app}", app)
                    .replace("{previous}", previous)
                    .replace("{migration}", name)
            })
            .collect();
        steps.push(Step::pending(StepAction::Rollback {
            migration: migration.migration.clone(),
            argv,
        }));
    }
    let mut restores = Vec::new();
    for migration in &destructive {
        let snapshot = migration.snapshot.as_ref().expect("checked above");
        let id = SnapshotId::parse(&snapshot.id).map_err(|err| err.to_string())?;
        let manifest = vault
            .show(&id)
            .map_err(|err| format!("snapshot {} of {}: {err}", snapshot.id, migration.migration))?;
        steps.push(Step::pending(StepAction::SchemaCheck {
            snapshot: snapshot.id.clone(),
        }));
        for index in restore::order(&manifest) {
            let object = &manifest.objects[index];
            restores.push(Step::pending(StepAction::Restore {
                snapshot: snapshot.id.clone(),
                object: index,
                table: object.table.clone(),
                columns: object.columns.clone(),
            }));
        }
    }
    steps.extend(restores);
    steps.push(Step::pending(StepAction::Verification));
    steps.push(Step::pending(StepAction::Notification));
    Ok(RestoreRun {
        requested_at: Utc::now(),
        requested_by: requested_by.to_string(),
        force,
        status: RunStatus::Running,
        steps,
        error: None,
        finished_at: None,
    })
}

/// A failed run asked for again: its failed step (and, when `force` is newly
/// asked for, every restore that left conflicts) runs again; what is done stays
/// done.
pub fn retry(run: &mut RestoreRun, requested_by: &str, force: bool) {
    let newly_forced = force && !run.force;
    run.force |= force;
    run.requested_by = requested_by.to_string();
    run.requested_at = Utc::now();
    run.status = RunStatus::Running;
    run.error = None;
    run.finished_at = None;
    for step in &mut run.steps {
        let conflicted = step.rows.as_ref().is_some_and(|r| r.conflicts > 0);
        let again = match step.action {
            StepAction::Restore { .. } => {
                step.status == StepStatus::Failed || (newly_forced && conflicted)
            }
            StepAction::Verification => step.status != StepStatus::Pending,
            _ => step.status == StepStatus::Failed,
        };
        if again {
            *step = Step::pending(step.action.clone());
        }
    }
}

/// What the workflow needs besides the run.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub alerts: Option<Alerts>,
    pub stats: RestoreStats,
    /// The detection task, which journals each change.
    pub journal: mpsc::Sender<Command>,
}

/// Runs the steps of `run` not done yet, journaling each change; returns when
/// it is done or a step failed (the run says which and why).
pub async fn execute(context: Context, incident: String, mut run: RestoreRun) {
    let mut worker = Worker {
        context,
        incident,
        db: None,
        vault: None,
    };
    while let Some(index) = run.steps.iter().position(|s| s.status != StepStatus::Done) {
        let started = Instant::now();
        let step = &mut run.steps[index];
        step.status = StepStatus::Running;
        step.started_at = Some(Utc::now());
        step.finished_at = None;
        let label = step_label(&step.action);
        tracing::info!(incident = %worker.incident, step = %describe(&step.action), "restore step");
        if !worker.journal(&run).await {
            return;
        }
        let result = worker.step(&mut run, index).await;
        worker
            .context
            .stats
            .step_seconds
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        let step = &mut run.steps[index];
        step.finished_at = Some(Utc::now());
        match result {
            Ok(detail) => {
                step.status = StepStatus::Done;
                step.detail = Some(detail);
                if !worker.journal(&run).await {
                    return;
                }
            }
            Err(detail) => {
                tracing::error!(incident = %worker.incident, step = %describe(&step.action), error = %detail, "restore step failed; approve again once it is fixed");
                step.status = StepStatus::Failed;
                step.detail = Some(detail.clone());
                run.status = RunStatus::Failed;
                run.error = Some(format!("{}: {detail}", describe(&run.steps[index].action)));
                run.finished_at = Some(Utc::now());
                worker
                    .context
                    .stats
                    .runs
                    .with_label_values(&["failed"])
                    .inc();
                worker.journal(&run).await;
                worker.close().await;
                return;
            }
        }
    }
    run.status = RunStatus::Done;
    run.finished_at = Some(Utc::now());
    worker
        .context
        .stats
        .runs
        .with_label_values(&["restored"])
        .inc();
    worker.journal(&run).await;
    worker.close().await;
    tracing::info!(incident = %worker.incident, "restored and verified");
}

struct Worker {
    context: Context,
    incident: String,
    db: Option<Box<dyn Adapter>>,
    vault: Option<Vault>,
}

impl Worker {
    /// Journals `run`; false when the detection task is gone (the daemon is
    /// stopping: the run resumes at the next start).
    async fn journal(&self, run: &RestoreRun) -> bool {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .context
            .journal
            .send(Command::Progress {
                id: self.incident.clone(),
                run: run.clone(),
                reply,
            })
            .await;
        if sent.is_err() || answer.await.is_err() {
            tracing::warn!(incident = %self.incident, "the daemon is stopping; the restore resumes at the next start");
            return false;
        }
        true
    }

    async fn db(&mut self) -> Result<&dyn Adapter, String> {
        if self.db.is_none() {
            let db = db::open(&self.context.config.database)
                .await
                .map_err(|err| format!("connecting to the database: {err}"))?;
            self.db = Some(db);
        }
        Ok(self.db.as_deref().expect("connected above"))
    }

    async fn vault(&mut self) -> Result<Vault, String> {
        if self.vault.is_none() {
            let vault = crate::commands::open_vault_for_reading(&self.context.config)
                .await
                .map_err(|err| crate::error_chain(err.as_ref()))?;
            self.vault = Some(vault);
        }
        Ok(self.vault.clone().expect("opened above"))
    }

    async fn close(&mut self) {
        if let Some(db) = self.db.take() {
            db.close().await;
        }
    }

    /// Runs step `index`; the text says what it did, or why it failed.
    async fn step(&mut self, run: &mut RestoreRun, index: usize) -> Result<String, String> {
        let environment = self.context.config.environment.clone();
        match run.steps[index].action.clone() {
            StepAction::Rollback { migration, argv } => {
                self.rollback(run, index, &migration, &argv).await
            }
            StepAction::SchemaCheck { snapshot } => {
                let id = parse(&snapshot)?;
                let vault = self.vault().await?;
                let db = self.db().await?;
                restore::check_rolled_back(db, &vault, &id, &environment)
                    .await
                    .map_err(|err| err.to_string())?;
                // Every object verified before the first restore step writes one.
                let manifest = vault.show(&id).map_err(|err| err.to_string())?;
                restore::check_intact(&vault, &manifest)
                    .await
                    .map_err(|err| err.to_string())?;
                Ok(format!(
                    "the schema is rolled back: every table and column of snapshot {snapshot} exists, and its data files verify against their checksums"
                ))
            }
            StepAction::Restore {
                snapshot, object, ..
            } => {
                let id = parse(&snapshot)?;
                let vault = self.vault().await?;
                let options = Options {
                    dry_run: false,
                    force: run.force,
                };
                let db = self.db().await?;
                let report = restore::restore_one(db, &vault, &id, object, &environment, options)
                    .await
                    .map_err(|err| err.to_string())?;
                let verification = match report.verification {
                    Verification::Checksum => "checksum",
                    Verification::Compared { .. } => "compared",
                    Verification::NotRun => "not_run",
                };
                let detail = format!(
                    "{} of {} rows written, {} already equal, {} conflicts, {} missing; verified: {}",
                    report.written,
                    report.snapshot_rows,
                    report.unchanged,
                    report.conflicts,
                    report.missing,
                    match report.verification {
                        Verification::Checksum => "the checksum matches the snapshot".to_string(),
                        Verification::Compared { rows } =>
                            format!("{rows} rows equal the snapshot"),
                        Verification::NotRun => "not run".to_string(),
                    }
                );
                run.steps[index].rows = Some(RestoredRows {
                    snapshot_rows: report.snapshot_rows,
                    written: report.written,
                    unchanged: report.unchanged,
                    conflicts: report.conflicts,
                    missing: report.missing,
                    verification: verification.to_string(),
                });
                Ok(detail)
            }
            StepAction::Verification => verify(run),
            StepAction::Notification => self.notify().await,
        }
    }

    /// Runs the rollback command unless the migration is already rolled back,
    /// then checks that it is.
    async fn rollback(
        &mut self,
        run: &mut RestoreRun,
        index: usize,
        migration: &str,
        argv: &[String],
    ) -> Result<String, String> {
        let key = migration
            .split_once('.')
            .map(|(app, name)| (app.to_string(), name.to_string()));
        let applied = |applied: &db::Applied| key.as_ref().is_some_and(|k| applied.contains(k));
        let db = self.db().await?;
        let before = db
            .applied_migrations()
            .await
            .map_err(|err| err.to_string())?;
        if !applied(&before) {
            return Ok(format!(
                "{migration} is not applied: the schema is already rolled back"
            ));
        }
        let config = &self.context.config;
        let dir = config
            .django
            .as_ref()
            .map(|d| d.project_dir.clone())
            .unwrap_or_else(|| PathBuf::from("."));
        let ran = run_command(argv, &dir, config.restore.rollback_timeout.0).await;
        let failure = ran.failure.clone();
        run.steps[index].command = Some(ran.run);
        if let Some(failure) = failure {
            return Err(failure);
        }
        let db = self.db().await?;
        let after = db
            .applied_migrations()
            .await
            .map_err(|err| err.to_string())?;
        if applied(&after) {
            return Err(format!(
                "`{}` succeeded but django_migrations still records {migration} as applied; check restore.rollback_command",
                argv.join(" ")
            ));
        }
        Ok(format!("`{}` rolled {migration} back", argv.join(" ")))
    }

    /// Marks the incident restored, then queues the follow-up for its receivers
    /// (queuing twice sends once).
    async fn notify(&mut self) -> Result<String, String> {
        // The run as journaled holds this step as running; only the state changes.
        let (reply, answer) = oneshot::channel();
        self.context
            .journal
            .send(Command::Restored {
                id: self.incident.clone(),
                reply,
            })
            .await
            .map_err(|_| "the daemon is stopping".to_string())?;
        let incident = answer
            .await
            .map_err(|_| "the daemon is stopping".to_string())?;
        let Some(outbox) = self.context.alerts.clone() else {
            return Ok("restored; no alert receiver is configured".to_string());
        };
        let queued =
            tokio::task::spawn_blocking(move || outbox.enqueue(alerts::Event::Restored, &incident))
                .await
                .map_err(|err| format!("queuing the follow-up panicked: {err}"))?
                .map_err(|err| format!("queuing the follow-up: {err}"))?;
        Ok(format!(
            "restored; the follow-up is queued for {queued} receiver(s)"
        ))
    }
}

/// Every restored object holds the snapshot's data: verified, with no row left
/// alone.
fn verify(run: &RestoreRun) -> Result<String, String> {
    let mut problems = Vec::new();
    let mut rows = 0;
    let mut objects = 0;
    for step in &run.steps {
        let StepAction::Restore { table, columns, .. } = &step.action else {
            continue;
        };
        let what = if columns.is_empty() {
            format!("table {table}")
        } else {
            format!("{table}.{}", columns.join(","))
        };
        let Some(figures) = &step.rows else {
            problems.push(format!("{what} has no restore report"));
            continue;
        };
        objects += 1;
        rows += figures.snapshot_rows;
        if figures.verification == "not_run" {
            problems.push(format!("{what} was not verified"));
        }
        if figures.conflicts > 0 && !run.force {
            problems.push(format!(
                "{} rows of {what} changed since the snapshot and were left alone (approve again with force to overwrite them)",
                figures.conflicts
            ));
        }
        if figures.missing > 0 {
            problems.push(format!(
                "{} rows of {what} were deleted since the snapshot, so their values have nowhere to go",
                figures.missing
            ));
        }
    }
    if problems.is_empty() {
        Ok(format!(
            "{objects} object(s), {rows} rows: each equal to its snapshot"
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// The outcome of the rollback command.
struct Ran {
    run: CommandRun,
    /// Why it counts as failed.
    failure: Option<String>,
}

/// Runs `argv` in `dir` without a shell, its output kept (the end of each
/// stream), killed after `timeout`.
async fn run_command(argv: &[String], dir: &std::path::Path, timeout: Duration) -> Ran {
    let started = Instant::now();
    let shown = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return Ran {
            run: CommandRun {
                exit_code: None,
                seconds: 0.0,
                output: String::new(),
            },
            failure: Some("restore.rollback_command is empty".to_string()),
        };
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    // If dropguard dies (even by SIGKILL) the command dies with it: the resumed
    // step runs it again, never beside an orphan of itself.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = command.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            return Ran {
                run: CommandRun {
                    exit_code: None,
                    seconds: started.elapsed().as_secs_f64(),
                    output: String::new(),
                },
                failure: Some(format!(
                    "`{shown}` could not start in {}: {err}; check restore.rollback_command (it runs without a shell, so the program must be on PATH or a path)",
                    dir.display()
                )),
            };
        }
    };
    let stdout = tokio::spawn(tail(child.stdout.take()));
    let stderr = tokio::spawn(tail(child.stderr.take()));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let (exit_code, failure) = match waited {
        Ok(Ok(status)) if status.success() => (status.code(), None),
        Ok(Ok(status)) => (
            status.code(),
            Some(match status.code() {
                Some(code) => {
                    format!("`{shown}` exited with code {code}; its output is in the step")
                }
                None => format!("`{shown}` was killed by a signal ({status})"),
            }),
        ),
        Ok(Err(err)) => (None, Some(format!("waiting for `{shown}`: {err}"))),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
                // SAFETY: kill(2) on the process group we created for the child.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill().await;
            (
                None,
                Some(format!(
                    "`{shown}` did not finish within restore.rollback_timeout ({}) and was killed",
                    humantime::format_duration(timeout)
                )),
            )
        }
    };
    let mut output = String::new();
    for (name, stream) in [("stdout", stdout), ("stderr", stderr)] {
        let text = stream.await.unwrap_or_default();
        let text = text.trim_end();
        if !text.is_empty() {
            output.push_str(&format!("[{name}]\n{text}\n"));
        }
    }
    Ran {
        run: CommandRun {
            exit_code,
            seconds: started.elapsed().as_secs_f64(),
            output: mask::sample(output.trim_end(), OUTPUT_CHARS),
        },
        failure,
    }
}

/// The end of a stream, read to its end (or until the process is killed).
async fn tail(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buffer = vec![0; 8192];
    let mut cut = false;
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buffer[..n]);
                if kept.len() > 2 * OUTPUT_TAIL_BYTES {
                    kept.drain(..kept.len() - OUTPUT_TAIL_BYTES);
                    cut = true;
                }
            }
        }
    }
    if kept.len() > OUTPUT_TAIL_BYTES {
        kept.drain(..kept.len() - OUTPUT_TAIL_BYTES);
        cut = true;
    }
    let text = String::from_utf8_lossy(&kept).into_owned();
    if cut { format!("…{text}") } else { text }
}

fn parse(snapshot: &str) -> Result<SnapshotId, String> {
    SnapshotId::parse(snapshot).map_err(|err| format!("snapshot {snapshot:?}: {err}"))
}

fn app_of(migration: &str) -> &str {
    migration.split_once('.').map_or("", |(app, _)| app)
}

/// The `step` label of the step-duration histogram.
fn step_label(action: &StepAction) -> &'static str {
    match action {
        StepAction::Rollback { .. } => "rollback",
        StepAction::SchemaCheck { .. } => "schema_check",
        StepAction::Restore { .. } => "restore",
        StepAction::Verification => "verification",
        StepAction::Notification => "notification",
    }
}

/// A step as people read it in logs and the CLI.
pub fn describe(action: &StepAction) -> String {
    match action {
        StepAction::Rollback { migration, argv } => {
            format!("rollback of {migration} (`{}`)", argv.join(" "))
        }
        StepAction::SchemaCheck { snapshot } => format!("schema check for snapshot {snapshot}"),
        StepAction::Restore {
            snapshot,
            table,
            columns,
            ..
        } => {
            if columns.is_empty() {
                format!("restore of table {table} from {snapshot}")
            } else {
                format!("restore of {table}.{} from {snapshot}", columns.join(","))
            }
        }
        StepAction::Verification => "verification".to_string(),
        StepAction::Notification => "notification".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::alerts::slack::tests::incident;

    fn config(extra: &str) -> Config {
        crate::config::parse(
            &format!(
                "environment = \"stage\"\n[database]\nurl = \"sqlite:///tmp/app.db\"\n{extra}"
            ),
            std::path::Path::new("/tmp"),
            &|_| None,
        )
        .expect("a valid configuration")
    }

    #[test]
    fn an_unpreserved_or_rename_only_deploy_has_no_restore_and_says_why() {
        let vault = Vault::open(tempfile::tempdir().unwrap().path().join("vault")).unwrap();
        let config = config("");
        let mut unpreserved = incident();
        unpreserved.deploy.migrations[0].snapshot = None;
        let why = plan(&unpreserved, &config, &vault, "api", false).unwrap_err();
        assert!(
            why.contains("catalog.0016_remove_product_brand was applied without a snapshot")
                && why.contains("python manage.py migrate catalog 0015_delete_digitalproduct"),
            "{why}"
        );
        let mut renames = incident();
        renames.deploy.migrations[0].destructive = false;
        let why = plan(&renames, &config, &vault, "api", false).unwrap_err();
        assert!(why.contains("dropped no data"), "{why}");
    }

    #[test]
    fn a_missing_snapshot_file_is_named() {
        let vault = Vault::open(tempfile::tempdir().unwrap().path().join("vault")).unwrap();
        let mut missing = incident();
        missing.deploy.migrations[0].snapshot.as_mut().unwrap().id =
            "01JD3Q1Z8G7N9V0000000000AB".into();
        let why = plan(&missing, &config(""), &vault, "api", false).unwrap_err();
        assert!(
            why.contains(
                "snapshot 01JD3Q1Z8G7N9V0000000000AB of catalog.0016_remove_product_brand"
            ),
            "{why}"
        );
    }

    fn step(action: StepAction, status: StepStatus, conflicts: Option<u64>) -> Step {
        let mut step = Step::pending(action);
        step.status = status;
        step.rows = conflicts.map(|conflicts| RestoredRows {
            snapshot_rows: 10,
            written: 10 - conflicts,
            unchanged: 0,
            conflicts,
            missing: 0,
            verification: "compared".into(),
        });
        step
    }

    fn restore_step(table: &str) -> StepAction {
        StepAction::Restore {
            snapshot: "S".into(),
            object: 0,
            table: table.into(),
            columns: Vec::new(),
        }
    }

    #[test]
    fn a_retry_runs_the_failed_step_again_and_with_force_the_conflicted_restores() {
        let mut run = RestoreRun {
            requested_at: Utc::now(),
            requested_by: "api".into(),
            force: false,
            status: RunStatus::Failed,
            steps: vec![
                step(
                    StepAction::SchemaCheck {
                        snapshot: "S".into(),
                    },
                    StepStatus::Done,
                    None,
                ),
                step(restore_step("a"), StepStatus::Done, Some(0)),
                step(restore_step("b"), StepStatus::Done, Some(3)),
                step(StepAction::Verification, StepStatus::Failed, None),
                step(StepAction::Notification, StepStatus::Pending, None),
            ],
            error: Some("3 rows of table b changed".into()),
            finished_at: Some(Utc::now()),
        };
        let error = verify(&run).unwrap_err();
        assert!(
            error.contains("3 rows of table b changed since the snapshot"),
            "{error}"
        );

        let mut again = run.clone();
        retry(&mut again, "api", false);
        let statuses: Vec<StepStatus> = again.steps.iter().map(|s| s.status).collect();
        use StepStatus::{Done, Pending};
        assert_eq!(statuses, [Done, Done, Done, Pending, Pending]);
        assert_eq!(again.status, RunStatus::Running);
        assert!(again.error.is_none());

        retry(&mut run, "api", true);
        let statuses: Vec<StepStatus> = run.steps.iter().map(|s| s.status).collect();
        assert_eq!(statuses, [Done, Done, Pending, Pending, Pending]);
        assert!(run.force);
    }

    #[tokio::test]
    async fn the_rollback_command_runs_without_a_shell_and_its_output_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let argv: Vec<String> = ["printf", "%s|", "a b", "$HOME", "; rm -rf /"]
            .map(String::from)
            .to_vec();
        let ran = run_command(&argv, dir.path(), Duration::from_secs(10)).await;
        assert!(ran.failure.is_none(), "{:?}", ran.failure);
        assert_eq!(ran.run.exit_code, Some(0));
        assert_eq!(ran.run.output, "[stdout]\na b|$HOME|; rm -rf /|");
    }

    #[tokio::test]
    async fn a_failing_missing_or_hanging_command_is_a_failed_step_that_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let argv = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let ran = run_command(
            &argv(&["sh", "-c", "echo token=hunter2 >&2; exit 4"]),
            dir.path(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(ran.run.exit_code, Some(4));
        assert!(ran.failure.unwrap().contains("exited with code 4"));
        assert!(ran.run.output.contains("[stderr]"), "{}", ran.run.output);
        assert!(!ran.run.output.contains("hunter2"), "{}", ran.run.output);

        let ran = run_command(
            &argv(&["/nonexistent/manage.py", "migrate"]),
            dir.path(),
            Duration::from_secs(10),
        )
        .await;
        let failure = ran.failure.unwrap();
        assert!(
            failure.contains("could not start") && failure.contains("without a shell"),
            "{failure}"
        );

        // The timeout kills the command and what it started.
        let started = Instant::now();
        let ran = run_command(
            &argv(&["sh", "-c", "sleep 30 & sleep 30"]),
            dir.path(),
            Duration::from_millis(300),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(ran.run.exit_code, None);
        assert!(
            ran.failure
                .unwrap()
                .contains("did not finish within restore.rollback_timeout"),
        );
    }
}
