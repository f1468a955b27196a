//! Checks that need more than one value or a look at the file system, and the
//! normalization `check-config` shows (absolute paths, canonical SQLite URLs).

use std::path::{Path, PathBuf};

use super::source::Document;
use super::{Config, DatabaseUrl, Duration, Multiline, Problem, RestoreMode, SecretUrl};

/// The placeholders `restore.rollback_command` may use.
const ROLLBACK_PLACEHOLDERS: [&str; 3] = ["app", "previous", "migration"];

struct Checker<'a> {
    doc: &'a Document,
    base_dir: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            line: self.doc.line(key),
            message: message.into(),
        });
    }

    /// Makes `path` absolute against the config file's directory, and folds `.` and
    /// `..` so that messages and `check-config` show the path the user means.
    fn resolve(&self, path: &Path) -> PathBuf {
        use std::path::Component;
        let mut out = PathBuf::new();
        for component in self.base_dir.join(path).components() {
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    }

    fn positive(&mut self, key: &str, duration: Duration) {
        if duration.0.is_zero() {
            self.problem(key, "must be longer than zero");
        }
    }

    fn http_url(&mut self, key: &str, url: &SecretUrl) {
        match url::Url::parse(url.expose()) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
            Ok(_) => self.problem(key, "must be an http:// or https:// URL with a host"),
            Err(err) => self.problem(key, format!("not a valid URL ({err})")),
        }
    }

    fn database_url(&mut self, url: &mut DatabaseUrl) {
        const KEY: &str = "database.url";
        let text = url.expose().trim().to_string();
        if let Some(rest) = text.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (file, query) = match rest.split_once('?') {
                Some((file, query)) => (file, Some(query)),
                None => (rest, None),
            };
            if file.is_empty() || file == ":memory:" {
                self.problem(
                    KEY,
                    "a SQLite URL must name the application's database file, like sqlite:///srv/app/db.sqlite3",
                );
                return;
            }
            let file = self.resolve(Path::new(file));
            if let Some(dir) = file.parent()
                && let Err(message) = creatable_dir(dir)
            {
                self.problem(KEY, format!("the SQLite file's directory: {message}"));
                return;
            }
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            *url = DatabaseUrl::new(format!("sqlite://{}{query}", file.display()));
            return;
        }
        let parsed = match url::Url::parse(&text) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.problem(
                    KEY,
                    format!(
                        "not a valid URL ({err}); write postgres://user@host:5432/db, mysql://user@host:3306/db or sqlite:///path/app.db"
                    ),
                );
                return;
            }
        };
        match crate::db::Engine::from_url(&text) {
            Some(_) => {
                if !parsed.has_host() || parsed.host_str() == Some("") {
                    self.problem(KEY, "the URL has no host");
                }
                if parsed.path().trim_start_matches('/').is_empty() {
                    self.problem(
                        KEY,
                        "the URL names no database; add it as the path, like postgres://user@host:5432/shop",
                    );
                }
            }
            None => self.problem(
                KEY,
                format!(
                    "unsupported database scheme {:?}: use postgres, mysql or sqlite",
                    parsed.scheme()
                ),
            ),
        }
    }
}

/// Checks `config` and normalizes it in place; returns every problem found.
pub fn validate(config: &mut Config, base_dir: &Path, doc: &Document) -> Vec<Problem> {
    let mut check = Checker {
        doc,
        base_dir,
        problems: Vec::new(),
    };

    if config.environment.trim().is_empty() {
        check.problem(
            "environment",
            "must name the environment, like \"prod\"; it is shown in every alert",
        );
    }

    check.database_url(&mut config.database.url);

    if let Some(django) = &mut config.django {
        django.project_dir = check.resolve(&django.project_dir);
        if !django.project_dir.is_dir() {
            let dir = django.project_dir.display().to_string();
            check.problem(
                "django.project_dir",
                format!("directory {dir} does not exist; point it at the Django project (the folder holding manage.py)"),
            );
        }
    }

    if let Some(django) = &config.django {
        let model = &django.auth_user_model;
        if model
            .split_once('.')
            .is_none_or(|(app, name)| app.is_empty() || name.is_empty() || name.contains('.'))
        {
            check.problem(
                "django.auth_user_model",
                format!("{model:?} is not app_label.ModelName, like \"accounts.User\""),
            );
        }
    }

    if let Some(sql) = &mut config.sql {
        sql.dir = check.resolve(&sql.dir);
        if !sql.dir.is_dir() {
            let dir = sql.dir.display().to_string();
            check.problem(
                "sql.dir",
                format!(
                    "directory {dir} does not exist; point it at the folder of .sql migrations"
                ),
            );
        }
        if sql.history_table.trim().is_empty() {
            check.problem(
                "sql.history_table",
                "must name the table of applied versions",
            );
        }
        if sql.version_column.trim().is_empty() {
            check.problem("sql.version_column", "must name the version column");
        }
    }

    if let Some(url) = &config.vault.url {
        let text = url.expose();
        let rest = text.strip_prefix("s3://").unwrap_or_default();
        let bucket = rest.split('/').next().unwrap_or_default();
        if text.strip_prefix("s3://").is_none() || bucket.is_empty() {
            check.problem(
                "vault.url",
                format!("{} is not s3://bucket[/prefix]", url.masked()),
            );
        } else if bucket.contains('@') || rest.contains('?') {
            // object_store would take `user:password@bucket` for the bucket's name
            // and quote it in every error; the credentials are the environment's.
            check.problem(
                "vault.url",
                "carries credentials or parameters; write s3://bucket/prefix and give the credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
            );
        }
    }
    if let Some(endpoint) = &config.vault.endpoint {
        match url::Url::parse(endpoint.expose()) {
            Ok(parsed) if parsed.scheme() == "https" => {}
            Ok(parsed) if parsed.scheme() == "http" && !config.vault.allow_http => check.problem(
                "vault.endpoint",
                "is plain http: set vault.allow_http = true for a local test server, or use https",
            ),
            Ok(parsed) if parsed.scheme() == "http" => {}
            _ => check.problem("vault.endpoint", "must be an http:// or https:// URL"),
        }
    }

    config.state.dir = check.resolve(&config.state.dir);
    let state_dir = config.state.dir.clone();
    if let Err(message) = creatable_dir(&state_dir) {
        check.problem("state.dir", message);
    }

    for (index, file) in config.logs.file.iter_mut().enumerate() {
        if file.path.trim().is_empty() {
            check.problem(
                &format!("logs.file[{index}].path"),
                "must be a path or glob, like /var/log/app/*.log",
            );
        } else {
            file.path = check.resolve(Path::new(&file.path)).display().to_string();
        }
        let key = |field: &str| format!("logs.file[{index}].{field}");
        match (file.multiline, &file.multiline_start) {
            (Multiline::Start, None) => check.problem(
                &key("multiline_start"),
                "multiline = \"start\" needs the regex that starts an event, like '^\\d{4}-\\d{2}-\\d{2} '",
            ),
            (Multiline::Start, Some(pattern)) => {
                if let Err(err) = regex::Regex::new(pattern) {
                    check.problem(&key("multiline_start"), format!("is not a valid regex: {err}"));
                }
            }
            (_, Some(_)) => check.problem(
                &key("multiline_start"),
                "is used only with multiline = \"start\"; set that too, or remove it",
            ),
            (_, None) => {}
        }
        if file.max_event_bytes < 256 {
            check.problem(&key("max_event_bytes"), "must be at least 256");
        }
        check.positive(&key("poll_interval"), file.poll_interval);
    }

    let kafkas = (config
        .logs
        .kafka
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("logs.kafka[{i}]"), k)))
    .chain(
        (config.deploys.kafka.iter().enumerate()).map(|(i, k)| (format!("deploys.kafka[{i}]"), k)),
    );
    for (prefix, kafka) in kafkas {
        let key = |field: &str| format!("{prefix}.{field}");
        let brokers_ok = kafka.brokers.split(',').all(|broker| {
            broker
                .trim()
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        });
        if !brokers_ok {
            check.problem(
                &key("brokers"),
                format!(
                    "{:?} is not a comma-separated list of host:port",
                    kafka.brokers
                ),
            );
        }
        if kafka.topic.trim().is_empty() {
            check.problem(&key("topic"), "must name the topic");
        }
        if kafka.group_id.trim().is_empty() {
            check.problem(&key("group_id"), "must name the consumer group");
        }
        if kafka.max_event_bytes < 256 {
            check.problem(&key("max_event_bytes"), "must be at least 256");
        }
    }

    for (index, scrape) in config.metrics.scrape.iter().enumerate() {
        check.http_url(&format!("metrics.scrape[{index}].url"), &scrape.url);
        if scrape.counters.is_empty() {
            check.problem(
                &format!("metrics.scrape[{index}].counters"),
                "must name at least one error counter, like 'django_http_responses_total_by_status_total{status=~\"5..\"}'",
            );
        }
        for (i, counter) in scrape.counters.iter().enumerate() {
            if let Err(message) = crate::sources::metrics::parse_selector(counter) {
                check.problem(&format!("metrics.scrape[{index}].counters[{i}]"), message);
            }
        }
        check.positive(
            &format!("metrics.scrape[{index}].interval"),
            scrape.interval,
        );
        check.positive(&format!("metrics.scrape[{index}].timeout"), scrape.timeout);
    }
    for (index, query) in config.metrics.query.iter().enumerate() {
        check.http_url(&format!("metrics.query[{index}].url"), &query.url);
        if query.query.trim().is_empty() {
            check.problem(
                &format!("metrics.query[{index}].query"),
                "must be a PromQL expression giving errors per second",
            );
        }
        check.positive(&format!("metrics.query[{index}].interval"), query.interval);
        check.positive(&format!("metrics.query[{index}].timeout"), query.timeout);
    }

    check.positive("database.connect_timeout", config.database.connect_timeout);
    check.positive(
        "database.statement_timeout",
        config.database.statement_timeout,
    );
    check.positive(
        "server.readiness_interval",
        config.server.readiness_interval,
    );
    check.positive("deploys.poll_interval", config.deploys.poll_interval);
    check.positive("gate.interval", config.gate.interval);

    for (index, pattern) in config.detect.patterns.iter().enumerate() {
        let key = format!("detect.patterns[{index}]");
        match regex::Regex::new(pattern) {
            Ok(regex) => {
                let names: Vec<&str> = regex.capture_names().flatten().collect();
                if !names.contains(&"table") && !names.contains(&"column") {
                    check.problem(
                        &key,
                        "needs a named group (?P<table>…) or (?P<column>…) saying which object the error names",
                    );
                }
            }
            Err(err) => check.problem(&key, format!("is not a valid regex: {err}")),
        }
    }

    let detect = &config.detect;
    if detect.window.0.is_zero() {
        check.problem("detect.window", "must be longer than zero");
    }
    if detect.min_errors == 0 {
        check.problem(
            "detect.min_errors",
            "must be at least 1, or every deploy opens an incident",
        );
    }
    if !(detect.spike_factor.is_finite() && detect.spike_factor > 1.0) {
        check.problem(
            "detect.spike_factor",
            format!(
                "must be a number greater than 1 (got {})",
                detect.spike_factor
            ),
        );
    }
    if detect.watch_for < detect.window {
        check.problem(
            "detect.watch_for",
            "must be at least as long as detect.window",
        );
    }

    check.positive(
        "alerts.max_retry_interval",
        config.alerts.max_retry_interval,
    );
    if let Some(slack) = &config.alerts.slack {
        check.http_url("alerts.slack.webhook_url", &slack.webhook_url);
    }
    for (index, hook) in config.alerts.webhook.iter().enumerate() {
        check.http_url(&format!("alerts.webhook[{index}].url"), &hook.url);
    }
    for (index, server) in config.alerts.alertmanager.iter().enumerate() {
        check.http_url(&format!("alerts.alertmanager[{index}].url"), &server.url);
    }

    let command = config.restore.rollback_command.clone();
    if command.trim().is_empty() {
        if config.restore.mode != RestoreMode::Manual {
            check.problem(
                "restore.rollback_command",
                "is required when restore.mode is approve or auto",
            );
        }
    } else {
        if shlex::split(&command).is_none_or(|argv| argv.is_empty()) {
            check.problem(
                "restore.rollback_command",
                "cannot be split into arguments (an unbalanced quote?); it runs without a shell, split the way a shell would",
            );
        }
        if config.restore.rollback_timeout.0.is_zero() {
            check.problem(
                "restore.rollback_timeout",
                "must be longer than 0s (\"10m\" is the default)",
            );
        }
        for placeholder in placeholders(&command) {
            if !ROLLBACK_PLACEHOLDERS.contains(&placeholder) {
                check.problem(
                    "restore.rollback_command",
                    format!(
                        "unknown placeholder {{{placeholder}}}; use {{app}}, {{previous}} or {{migration}}"
                    ),
                );
            }
        }
    }

    if let Some(token) = &config.server.api_token
        && token.expose().trim().is_empty()
    {
        check.problem(
            "server.api_token",
            "is empty; set a long random token or remove the key",
        );
    }

    check.problems
}

/// A directory dropguard can create if missing: it, or its nearest existing ancestor,
/// is a directory.
fn creatable_dir(dir: &Path) -> Result<(), String> {
    let existing = dir.ancestors().find(|path| path.exists());
    match existing {
        Some(path) if path.is_dir() => Ok(()),
        Some(path) if path == dir => {
            Err(format!("{} exists and is not a directory", dir.display()))
        }
        Some(path) => Err(format!(
            "{} cannot be created: {} is not a directory",
            dir.display(),
            path.display()
        )),
        None => Err(format!("{} cannot be created", dir.display())),
    }
}

fn placeholders(command: &str) -> impl Iterator<Item = &str> {
    command
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name))
}
