//! The configuration structs: plain serde data, one struct per TOML table.
//!
//! Unknown keys are not rejected here with `deny_unknown_fields`: that would stop at the
//! first one. `source::Document::deserialize` wraps serde_ignored around these structs
//! and reports every unknown key with its path and line instead. Keep every struct free
//! of `flatten` and untagged enums, which would hide keys from serde_ignored.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{DatabaseUrl, EndpointUrl, Secret, SecretUrl};

/// A duration written as a number with a unit: "500ms", "60s", "30m", "2h".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(Duration)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?}: write a number with a unit, like \"500ms\", \"60s\" or \"30m\""
                ))
            })
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    /// Named in every alert, so a reader knows which of test/stage/prod is hurt.
    /// One dropguard runs per environment.
    pub environment: String,
    /// The application's database: where migrations are applied and data is preserved from.
    pub database: DatabaseConfig,
    /// The Django project whose migrations are analysed. Absent for non-Django users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub django: Option<DjangoConfig>,
    /// Folders of plain SQL migrations, for applications not on Django.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlConfig>,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub vault: VaultConfig,
    #[serde(default)]
    pub logs: LogsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub deploys: DeploysConfig,
    #[serde(default)]
    pub preserve: PreserveConfig,
    #[serde(default)]
    pub gate: GateConfig,
    #[serde(default)]
    pub detect: DetectConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub restore: RestoreConfig,
    #[serde(default)]
    pub server: ServerConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseConfig {
    /// `postgres://user:pass@host:5432/db`, `mysql://user:pass@host:3306/db` or
    /// `sqlite:///abs/path/app.db` (`sqlite://rel/path.db` is relative to the config file;
    /// the file may appear later, its directory must be creatable).
    /// The password is masked wherever the URL is shown.
    pub url: DatabaseUrl,
    /// How long connecting may take (TCP, TLS, authentication), and how long a
    /// `SELECT 1` on a new connection may take to tell a busy server from one
    /// that stopped answering.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// How long any database call may go without an answer (a stream: without
    /// its next row) before the server is asked a `SELECT 1` on a new
    /// connection; without an answer to that either, the call fails. A busy
    /// server that answers is waited for, so a long preserve or restore is not
    /// cut short.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_statement_timeout() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DjangoConfig {
    /// The directory below which `<app>/migrations/*.py` are found; must exist.
    pub project_dir: PathBuf,
    /// `settings.AUTH_USER_MODEL`, as `app_label.ModelName`: what
    /// `swappable_dependency(settings.AUTH_USER_MODEL)` and FKs to it resolve to.
    #[serde(default = "default_auth_user_model")]
    pub auth_user_model: String,
}

fn default_auth_user_model() -> String {
    "auth.User".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SqlConfig {
    /// A folder of `*.sql` or `*.up.sql` files applied in file-name order (`*.down.sql`
    /// are ignored); must exist.
    pub dir: PathBuf,
    /// The table where the migration tool records applied versions (golang-migrate,
    /// dbmate and sqlx use `schema_migrations`-like tables). A file is pending when its
    /// version (the leading digits of its name) is above every recorded version and
    /// not recorded itself; without the table, every file is pending.
    #[serde(default = "default_history_table")]
    pub history_table: String,
    /// The column of `history_table` holding the version.
    #[serde(default = "default_version_column")]
    pub version_column: String,
}

fn default_history_table() -> String {
    "schema_migrations".to_string()
}

fn default_version_column() -> String {
    "version".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StateConfig {
    /// Checkpoints, journal, outbox and (by default) the vault live here. Created,
    /// owner-only, at start-up if missing.
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: default_state_dir(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/dropguard")
}

/// Where snapshots are kept beyond `<state.dir>/vault`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct VaultConfig {
    /// `s3://bucket/prefix`: every snapshot is mirrored there (data first,
    /// manifest last), and instances fetch the ones they lack. Credentials come
    /// from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`), never
    /// from the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<EndpointUrl>,
    /// An S3-compatible endpoint other than AWS (MinIO, Ceph, …). Shown with
    /// any credential in it (a proxy's `user:password@`, a token parameter) masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointUrl>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Allow plain http:// to `endpoint` (a local test server; never in production).
    #[serde(default)]
    pub allow_http: bool,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            url: None,
            endpoint: None,
            region: default_region(),
            allow_http: false,
        }
    }
}

fn default_region() -> String {
    "us-east-1".to_string()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct LogsConfig {
    /// Application log files to tail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file: Vec<FileLogConfig>,
    /// Kafka topics carrying application logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kafka: Vec<KafkaLogConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FileLogConfig {
    /// A glob (`/var/log/app/*.log`); files matching it later are picked up too.
    pub path: String,
    /// Where to start in a file seen for the first time (no checkpoint): `end`
    /// (only what is written from now on) or `beginning`. Files with a checkpoint
    /// always resume at it.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// How each line is read: `auto` (a line that is a JSON object is JSON,
    /// anything else text), `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// Which JSON fields hold the message, the level and the time.
    #[serde(default)]
    pub fields: JsonFields,
    /// How lines are joined into events: `python` (a traceback, with its chained
    /// exceptions and the database's LINE/HINT lines, joins the line that started
    /// it), `start` (a line matching `multiline_start` starts an event, any other
    /// line continues it) or `none` (one line, one event).
    #[serde(default)]
    pub multiline: Multiline,
    /// The regex for `multiline = "start"`, e.g. `^\d{4}-\d{2}-\d{2} `.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline_start: Option<String>,
    /// A pending multi-line event is handed on after this long without a new line.
    #[serde(default = "default_multiline_timeout")]
    pub multiline_timeout: Duration,
    /// Events longer than this are truncated to it (and counted).
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// How often files are polled when filesystem notifications are unavailable
    /// or missed (network filesystems, some container overlays).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Duration,
    /// Directories a symlink the glob matches may point into (Kubernetes'
    /// `/var/log/containers/*.log` point into `/var/log/pods`). A symlink is
    /// followed only into these and into the glob's own directory; any other is
    /// refused and reported, so a link to `/etc/shadow` reads nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symlinks_into: Vec<std::path::PathBuf>,
}

impl FileLogConfig {
    /// Every setting at its default, for reading files outside any config
    /// (`dropguard replay` without one).
    pub fn defaults() -> Self {
        Self {
            path: String::new(),
            read_from: ReadFrom::default(),
            format: LogFormat::default(),
            fields: JsonFields::default(),
            multiline: Multiline::default(),
            multiline_start: None,
            multiline_timeout: default_multiline_timeout(),
            max_event_bytes: default_max_event_bytes(),
            poll_interval: default_poll_interval(),
            symlinks_into: Vec::new(),
        }
    }
}

fn default_multiline_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_max_event_bytes() -> usize {
    64 * 1024
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

/// Where a file without a checkpoint is first read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    Beginning,
    #[default]
    End,
}

/// How a line or a message payload is interpreted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Auto,
    Text,
    Json,
}

/// The fields of a JSON log record dropguard reads; the rest are kept as they are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct JsonFields {
    /// The human message (the error text signatures are matched against).
    #[serde(default = "default_message_field")]
    pub message: String,
    #[serde(default = "default_level_field")]
    pub level: String,
    /// RFC 3339, `YYYY-MM-DD HH:MM:SS[,.fff]` or Unix seconds.
    #[serde(default = "default_time_field")]
    pub time: String,
}

impl Default for JsonFields {
    fn default() -> Self {
        Self {
            message: default_message_field(),
            level: default_level_field(),
            time: default_time_field(),
        }
    }
}

fn default_message_field() -> String {
    "message".to_string()
}

fn default_level_field() -> String {
    "level".to_string()
}

fn default_time_field() -> String {
    "time".to_string()
}

/// How lines are grouped into events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Multiline {
    #[default]
    Python,
    Start,
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct KafkaLogConfig {
    /// Bootstrap brokers, comma-separated `host:port`.
    pub brokers: String,
    pub topic: String,
    /// Consumer group: instances sharing it split the topic's partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Where a group without committed offsets starts: `latest` or `earliest`.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// How each message payload is read: `auto`, `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// Which JSON fields hold the message, the level and the time.
    #[serde(default)]
    pub fields: JsonFields,
    /// Payloads longer than this are truncated to it (and counted).
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
}

fn default_group_id() -> String {
    "dropguard".to_string()
}

/// librdkafka's `auto.offset.reset`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    Earliest,
    #[default]
    Latest,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MetricsConfig {
    /// Application metrics endpoints to scrape (e.g. django-prometheus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scrape: Vec<ScrapeConfig>,
    /// PromQL queries run against a Prometheus server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ScrapeConfig {
    /// An `http://` or `https://` URL serving the Prometheus text format. Shown with
    /// its path and query masked, since they sometimes carry tokens.
    pub url: SecretUrl,
    /// The error counters to turn into rates: a metric name with optional label
    /// matchers (`=`, `!=`, `=~`, `!~`), like PromQL's. The series matching one
    /// selector are summed.
    #[serde(default = "default_counters")]
    pub counters: Vec<String>,
    #[serde(default = "default_scrape_interval")]
    pub interval: Duration,
    /// A scrape taking longer than this fails (and is counted).
    #[serde(default = "default_scrape_timeout")]
    pub timeout: Duration,
}

fn default_counters() -> Vec<String> {
    vec![r#"django_http_responses_total_by_status_total{status=~"5.."}"#.to_string()]
}

fn default_scrape_interval() -> Duration {
    Duration::from_secs(15)
}

fn default_scrape_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct QueryConfig {
    /// The Prometheus server's base URL (`http://prometheus:9090`); the query goes
    /// to its `/api/v1/query`.
    pub url: SecretUrl,
    /// A PromQL expression giving an error rate per second, e.g.
    /// `sum(rate(django_http_responses_total_by_status_total{status=~"5.."}[1m]))`.
    /// The values of every series it returns are summed.
    pub query: String,
    #[serde(default = "default_scrape_interval")]
    pub interval: Duration,
    #[serde(default = "default_scrape_timeout")]
    pub timeout: Duration,
}

/// How deploys (applied migrations) are seen.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DeploysConfig {
    /// How often `django_migrations` is read for rows newer than the last one
    /// seen; each new batch of rows is a deploy. A cheap indexed query.
    #[serde(default = "default_deploy_poll")]
    pub poll_interval: Duration,
    /// Kafka topics carrying deploy announcements: JSON objects shaped like the
    /// body of `POST /api/v1/deploys`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kafka: Vec<KafkaLogConfig>,
}

impl Default for DeploysConfig {
    fn default() -> Self {
        Self {
            poll_interval: default_deploy_poll(),
            kafka: Vec::new(),
        }
    }
}

fn default_deploy_poll() -> Duration {
    Duration::from_secs(2)
}

/// What the daemon preserves on its own.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PreserveConfig {
    /// Preserve the data at risk as soon as a destructive migration appears in
    /// the migration folders (at start, and whenever the files change), so the
    /// snapshot exists before `migrate` runs.
    #[serde(default = "default_true")]
    pub auto: bool,
}

impl Default for PreserveConfig {
    fn default() -> Self {
        Self { auto: true }
    }
}

fn default_true() -> bool {
    true
}

/// The daemon's continuous usage check (`dropguard gate` does the same once).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GateConfig {
    /// While destructive migrations are pending, how often the database's
    /// usage statistics are sampled; each check compares a sample with the
    /// previous one, so this is also the window of each verdict.
    #[serde(default = "default_gate_interval")]
    pub interval: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            interval: default_gate_interval(),
        }
    }
}

fn default_gate_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DetectConfig {
    /// The sliding window in which correlated errors are counted.
    #[serde(default = "default_window")]
    pub window: Duration,
    /// Correlated errors within `window` that open an incident.
    #[serde(default = "default_min_errors")]
    pub min_errors: u64,
    /// An incident also opens when the error rate exceeds this many times the
    /// pre-deploy baseline during a watch window. Must be greater than 1.
    #[serde(default = "default_spike_factor")]
    pub spike_factor: f64,
    /// How long after a deploy errors are correlated with it.
    #[serde(default = "default_watch_for")]
    pub watch_for: Duration,
    /// More error signatures, beside the built-in ones of PostgreSQL, MySQL/MariaDB
    /// and SQLite: regexes with a named group `table` and/or `column` (which may be
    /// qualified, `t.c`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            window: default_window(),
            min_errors: default_min_errors(),
            spike_factor: default_spike_factor(),
            watch_for: default_watch_for(),
            patterns: Vec::new(),
        }
    }
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn default_min_errors() -> u64 {
    5
}
fn default_spike_factor() -> f64 {
    3.0
}
fn default_watch_for() -> Duration {
    Duration::from_secs(30 * 60)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AlertsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackConfig>,
    /// The longest wait between two tries of an alert its receiver did not take
    /// (5xx, a refused connection, a timeout). Waits start at 1 s and double up
    /// to this; after an outage the alert goes out at most this long after the
    /// receiver is back.
    #[serde(default = "default_max_retry_interval")]
    pub max_retry_interval: Duration,
    /// Generic JSON webhooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook: Vec<WebhookConfig>,
    /// Alertmanager servers: each incident becomes one alert there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alertmanager: Vec<AlertmanagerConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            slack: None,
            max_retry_interval: default_max_retry_interval(),
            webhook: Vec::new(),
            alertmanager: Vec::new(),
        }
    }
}

fn default_max_retry_interval() -> Duration {
    Duration::from_secs(5 * 60)
}

impl AlertsConfig {
    /// Whether any receiver is configured: without one, nothing is queued or sent.
    pub fn any(&self) -> bool {
        self.slack.is_some() || !self.webhook.is_empty() || !self.alertmanager.is_empty()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SlackConfig {
    /// A Slack incoming-webhook URL. Its path is the credential: always masked.
    pub webhook_url: SecretUrl,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WebhookConfig {
    /// Receives a JSON body per incident state change. Path and query are masked when shown.
    pub url: SecretUrl,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AlertmanagerConfig {
    /// The Alertmanager's base URL (`http://alertmanager:9093`); alerts are posted
    /// to `/api/v2/alerts` below it. Masked when shown (it may carry credentials).
    pub url: SecretUrl,
}

/// Who runs a restore once an incident is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    /// The alert carries the commands; a person runs them.
    #[default]
    Manual,
    /// An API/CLI approval runs the rollback command, then the restore.
    Approve,
    /// dropguard rolls back and restores on its own.
    Auto,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RestoreConfig {
    #[serde(default)]
    pub mode: RestoreMode,
    /// The schema rollback, with `{app}`, `{previous}` and `{migration}` filled in.
    /// It runs in `django.project_dir` as an argv split like a shell would, but
    /// without a shell (write `sh -c '…'` to have one).
    #[serde(default = "default_rollback_command")]
    pub rollback_command: String,
    /// How long the rollback command may run before it is killed.
    #[serde(default = "default_rollback_timeout")]
    pub rollback_timeout: Duration,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        Self {
            mode: RestoreMode::default(),
            rollback_command: default_rollback_command(),
            rollback_timeout: default_rollback_timeout(),
        }
    }
}

fn default_rollback_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

fn default_rollback_command() -> String {
    "python manage.py migrate {app} {previous}".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerConfig {
    /// Address of the HTTP server (/metrics, health, API). Port 0 picks a free port.
    #[serde(default = "default_listen", with = "socket_addr")]
    pub listen: SocketAddr,
    /// Bearer token required by the mutating API endpoints. Never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<Secret>,
    /// On SIGTERM/SIGINT, how long in-flight work may take to finish before exit.
    #[serde(default = "default_grace_period")]
    pub grace_period: Duration,
    /// How often the daemon checks, for `/readyz`, that the database answers a
    /// `SELECT 1` on a new connection and that the vault takes a write.
    #[serde(default = "default_readiness_interval")]
    pub readiness_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            api_token: None,
            grace_period: default_grace_period(),
            readiness_interval: default_readiness_interval(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9187))
}
fn default_grace_period() -> Duration {
    Duration::from_secs(10)
}

fn default_readiness_interval() -> Duration {
    Duration::from_secs(10)
}

/// `server.listen` as text, with an error that shows the expected form.
mod socket_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid listen address {text:?}: write IP:PORT, like \"127.0.0.1:9187\" or \"[::]:9187\""
            ))
        })
    }

    pub fn serialize<S: Serializer>(addr: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(addr)
    }
}
