use std::path::Path;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn problems(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    match parse(text, dir.path(), &no_env) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

const MINIMAL: &str = "environment = \"stage\"\n[database]\nurl = \"postgres://app@db:5432/shop\"\n[state]\ndir = \"state\"\n";

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = parse(MINIMAL, dir.path(), &no_env).unwrap();
    assert_eq!(config.detect.window.0, std::time::Duration::from_secs(60));
    assert_eq!(config.detect.min_errors, 5);
    assert_eq!(
        config.detect.watch_for.0,
        std::time::Duration::from_secs(1800)
    );
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:9187");
    assert_eq!(config.restore.mode, RestoreMode::Manual);
    assert_eq!(config.state.dir, dir.path().join("state"));
}

#[test]
fn durations_take_units() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{MINIMAL}[detect]\nwindow = \"500ms\"\nwatch_for = \"30m\"\n");
    let config = parse(&text, dir.path(), &no_env).unwrap();
    assert_eq!(
        config.detect.window.0,
        std::time::Duration::from_millis(500)
    );
    assert_eq!(
        config.detect.watch_for.0,
        std::time::Duration::from_secs(1800)
    );

    let bad = problems(&format!(
        "{MINIMAL}[detect]\nwindow = \"5 minutes please\"\n"
    ));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("detect.window (line 7): invalid duration"),
        "{bad:?}"
    );
}

#[test]
fn every_unknown_key_is_named_with_its_line() {
    let text = format!(
        "{MINIMAL}[detect]\nmin_eror = 5\n[server]\nlisten = \"127.0.0.1:0\"\nlistne = \"x\"\n[[logs.file]]\npath = \"/var/log/*.log\"\nfolow = true\n"
    );
    let found = problems(&text);
    assert_eq!(
        found,
        vec![
            "unknown key detect.min_eror (line 7); check its spelling against config/dropguard.example.toml",
            "unknown key server.listne (line 10); check its spelling against config/dropguard.example.toml",
            "unknown key logs.file[0].folow (line 13); check its spelling against config/dropguard.example.toml",
        ]
    );
}

#[test]
fn a_missing_variable_names_variable_key_and_line() {
    let text = format!("{MINIMAL}[alerts.slack]\nwebhook_url = \"${{SLACK_WEBHOOK_URL}}\"\n");
    let found = problems(&text);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with(
            "alerts.slack.webhook_url (line 7): environment variable SLACK_WEBHOOK_URL is not set"
        ),
        "{found:?}"
    );
}

#[test]
fn variables_are_expanded_in_values() {
    let dir = tempfile::tempdir().unwrap();
    let env = |name: &str| (name == "DB_PASSWORD").then(|| "p@ss w0rd".to_string());
    let text = "environment = \"prod\"\n[database]\nurl = \"postgres://app:${DB_PASSWORD}@db/shop\"\n[state]\ndir = \"s\"\n";
    let config = parse(text, dir.path(), &env).unwrap();
    assert_eq!(
        config.database.url.expose(),
        "postgres://app:p@ss w0rd@db/shop"
    );
}

#[test]
fn cross_field_problems_are_all_reported() {
    let text = "environment = \"\"\n[database]\nurl = \"oracle://x/y\"\n[django]\nproject_dir = \"/nonexistent/app\"\n[state]\ndir = \"/dev/null/state\"\n[detect]\nmin_errors = 0\nspike_factor = 0.5\n[server]\nlisten = \"localhost\"\n";
    let found = problems(text);
    // The listen address is a type error: reported alone, before cross-field checks run.
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("server.listen (line 12): invalid listen address \"localhost\""),
        "{found:?}"
    );

    let text = text.replace("listen = \"localhost\"", "listen = \"127.0.0.1:9000\"");
    let found = problems(&text);
    let keys: Vec<&str> = found.iter().map(|p| p.split(' ').next().unwrap()).collect();
    assert_eq!(
        keys,
        vec![
            "environment",
            "database.url",
            "django.project_dir",
            "state.dir",
            "detect.min_errors",
            "detect.spike_factor"
        ],
        "{found:?}"
    );
    assert!(found[1].contains("unsupported database scheme \"oracle\""));
}

#[test]
fn missing_required_keys_are_named() {
    let found = problems("environment = \"x\"\n");
    assert_eq!(found, vec!["database: required key database is missing"]);
    let found = problems("environment = \"x\"\n[database]\n");
    assert_eq!(
        found,
        vec!["database.url (line 2): required key database.url is missing"]
    );
}

#[test]
fn toml_syntax_errors_give_the_line() {
    let found = problems("environment = \"x\"\n[database\nurl = 1\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("line 2: invalid TOML"), "{found:?}");
}

#[test]
fn sqlite_paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let text = "environment = \"demo\"\n[database]\nurl = \"sqlite://data/app.db\"\n[state]\ndir = \"state\"\n";
    let config = parse(text, dir.path(), &no_env).unwrap();
    assert_eq!(
        config.database.url.expose(),
        format!("sqlite://{}", dir.path().join("data/app.db").display())
    );
    let file = dir.path().join("plainfile");
    std::fs::write(&file, "").unwrap();
    let bad = problems(&text.replace("data/app.db", &format!("{}/app.db", file.display())));
    assert!(bad[0].contains("is not a directory"), "{bad:?}");
}

#[test]
fn masked_output_hides_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let text = "environment = \"prod\"\n[database]\nurl = \"mysql://root:topsecret@db:3306/edxapp\"\n[state]\ndir = \"s\"\n[alerts.slack]\nwebhook_url = \"https://hooks.slack.com/services/T1/B2/SLACKSECRET\"\n[[alerts.webhook]]\nurl = \"https://hooks.internal/x?token=HOOKSECRET\"\n[server]\napi_token = \"APITOKEN\"\n";
    let config = parse(text, dir.path(), &no_env).unwrap();
    let shown = config.to_masked_toml();
    for secret in ["topsecret", "SLACKSECRET", "HOOKSECRET", "APITOKEN"] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    assert!(
        shown.contains("mysql://root:********@db:3306/edxapp"),
        "{shown}"
    );
    // What is shown parses back as TOML, so it can be diffed and kept.
    let _: toml::Table = toml::from_str(&shown).unwrap();
}

#[test]
fn rollback_command_placeholders_are_checked() {
    let text = format!(
        "{MINIMAL}[restore]\nmode = \"approve\"\nrollback_command = \"manage.py migrate {{app}} {{prev}}\"\n"
    );
    let found = problems(&text);
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("unknown placeholder {prev}"), "{found:?}");
}

#[test]
fn a_rollback_command_that_cannot_be_split_is_refused() {
    let text = format!(
        "{MINIMAL}[restore]\nmode = \"approve\"\nrollback_command = \"sh -c 'manage.py migrate {{app}} {{previous}}\"\n"
    );
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("restore.rollback_command") && found[0].contains("unbalanced quote"),
        "{found:?}"
    );
}

#[test]
fn the_kubernetes_sidecar_config_map_holds_a_valid_configuration() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("config/kubernetes-sidecar.yaml")).unwrap();
    let toml: String = manifest
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("dropguard.toml: |"))
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    assert!(toml.contains("[server]"), "{toml}");
    let env = |_: &str| Some("from-env".to_string());
    let doc = source::Document::parse(&toml, &env).unwrap();
    if let Err(problems) = doc.deserialize::<Config>() {
        panic!("kubernetes-sidecar.yaml's dropguard.toml: {problems:?}");
    }
}

#[test]
fn the_example_and_demo_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let env = |_: &str| Some("from-env".to_string());
    for name in ["dropguard.example.toml", "demo.toml", "production.toml"] {
        let path = root.join("config").join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        // The example points at production paths; check only that every key is known.
        let doc = source::Document::parse(&text, &env).unwrap();
        if let Err(problems) = doc.deserialize::<Config>() {
            panic!("{name}: {problems:?}");
        }
    }
}

/// Every dotted key path of a TOML table, array elements folded into `[]`.
fn key_paths(table: &toml::Table, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => key_paths(inner, &path, out),
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        key_paths(inner, &format!("{path}[]"), out);
                    }
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
}

#[test]
fn the_example_config_documents_every_key() {
    // Loading the example fills in defaults for any key it leaves out; shown back,
    // such a key would appear. So the keys shown must be exactly the keys written.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/dropguard.example.toml")).unwrap();
    let env = |_: &str| Some("from-env".to_string());
    let doc = source::Document::parse(&text, &env).unwrap();
    let config: Config = doc.deserialize().unwrap();
    let shown: toml::Table = toml::from_str(&config.to_masked_toml()).unwrap();
    let written: toml::Table = toml::from_str(&text).unwrap();
    let (mut shown_keys, mut written_keys) = (Default::default(), Default::default());
    key_paths(&shown, "", &mut shown_keys);
    key_paths(&written, "", &mut written_keys);
    let missing: Vec<_> = shown_keys.difference(&written_keys).collect();
    assert!(
        missing.is_empty(),
        "keys missing from config/dropguard.example.toml: {missing:?}"
    );
}

#[test]
fn source_settings_are_checked_together() {
    let text = format!(
        "{MINIMAL}[[logs.file]]\npath = \"/var/log/*.log\"\nmultiline = \"start\"\nmax_event_bytes = 10\n\
         [[logs.file]]\npath = \"/var/log/b.log\"\nmultiline_start = '^x'\n\
         [[metrics.scrape]]\nurl = \"http://app:8000/metrics\"\ncounters = ['errors_total{{code=~\"5..']\n\
         [[metrics.query]]\nurl = \"http://prometheus:9090\"\nquery = \" \"\ninterval = \"0s\"\n"
    );
    let found = problems(&text);
    let keys: Vec<&str> = found
        .iter()
        .map(|p| p.split(' ').next().unwrap().trim_end_matches(':'))
        .collect();
    assert_eq!(
        keys,
        [
            "logs.file[0].multiline_start",
            "logs.file[0].max_event_bytes",
            "logs.file[1].multiline_start",
            "metrics.scrape[0].counters[0]",
            "metrics.query[0].query",
            "metrics.query[0].interval",
        ],
        "{found:#?}"
    );
    assert!(found[3].contains("no closing"), "{}", found[3]);
}

#[test]
fn user_patterns_must_compile_and_name_what_is_missing() {
    let text = format!(
        "{MINIMAL}[detect]\npatterns = ['ok (?P<table>\\w+)', 'no groups here', 'bad (']\n"
    );
    let found = problems(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("detect.patterns[1]") && found[0].contains("(?P<table>"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("detect.patterns[2]") && found[1].contains("not a valid regex"),
        "{}",
        found[1]
    );
}

/// Issue 17, item 11: a config path naming a FIFO blocked, `/dev/zero` was read
/// until memory ran out. Only a regular file of at most 4 MiB is read.
#[test]
fn a_config_that_is_not_a_regular_file_or_too_large_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let big = dir.path().join("big.toml");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(MAX_CONFIG_BYTES + 1).unwrap();
    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"environment = \"caf\xe9\"\n").unwrap();
    for (path, wanted) in [
        (fifo.as_path(), "is a FIFO (named pipe), not a regular file"),
        (
            Path::new("/dev/zero"),
            "is a character device, not a regular file",
        ),
        (dir.path(), "is a directory, not a regular file"),
        (
            big.as_path(),
            "is 4194305 bytes; dropguard reads at most 4194304 (4 MiB)",
        ),
        (latin1.as_path(), "is not UTF-8 text (byte 18)"),
    ] {
        let err = load(path).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        let message = &err.problems[0].message;
        assert!(
            message.contains(wanted) && message.contains(&path.display().to_string()),
            "{message}"
        );
    }
}

/// Issue 17, item 11: only the first value of the wrong type was reported, so a
/// config with five took five runs to fix.
#[test]
fn every_value_of_the_wrong_type_is_reported_in_one_run() {
    let text = "environment = 5\n[database]\nurl = 1\n[state]\ndir = \"s\"\n\
                [detect]\nmin_errors = \"five\"\nwindow = \"a minute\"\nmin_eror = 1\n\
                [[logs.file]]\npath = 1\n[[logs.file]]\npath = \"/var/log/b.log\"\nmax_event_bytes = \"big\"\n\
                [[logs.file]]\nmultiline = \"sometimes\"\n\
                [metrics]\nscrape = [1, { url = \"http://app/metrics\", interval = 5 }]\n\
                [server]\nlisten = \"localhost\"\n";
    let found = problems(text);
    let keys: Vec<&str> = found
        .iter()
        .map(|p| p.split(' ').next().unwrap().trim_end_matches(':'))
        .collect();
    assert_eq!(
        keys,
        [
            "environment",
            "database.url",
            "detect.min_errors",
            "detect.window",
            "unknown",
            "logs.file[0].path",
            "logs.file[1].max_event_bytes",
            "logs.file[2].path",
            "logs.file[2].multiline",
            "metrics.scrape[0]",
            "metrics.scrape[1].interval",
            "server.listen",
        ],
        "{found:#?}"
    );
    // Lines as written, also after an earlier element was set aside.
    for (index, line) in [
        (0, 1),
        (1, 3),
        (2, 7),
        (3, 8),
        (5, 11),
        (6, 14),
        (7, 15),
        (8, 16),
        (9, 18),
        (10, 18),
        (11, 20),
    ] {
        assert!(
            found[index].contains(&format!("(line {line})")),
            "{}",
            found[index]
        );
    }
    assert!(
        found[4].contains("unknown key detect.min_eror (line 9)"),
        "{found:#?}"
    );
    assert!(
        found[7].contains("required key logs.file[2].path is missing"),
        "{found:#?}"
    );
    // What serde said, not a guess: the type expected.
    assert!(
        found[0].contains("invalid type: integer `5`, expected a string"),
        "{found:#?}"
    );
}
