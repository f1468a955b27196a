//! `dropguard demo`, the README's first command: the whole runbook on the
//! embedded default, with nothing installed and nothing left behind.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::{BIN, stderr, stdout};

fn demo(args: &[&str], cwd: &Path, tmp: &Path) -> Output {
    Command::new(BIN)
        .arg("demo")
        .args(args)
        .current_dir(cwd)
        .env("TMPDIR", tmp)
        .env_remove("DROPGUARD_CONFIG")
        .env_remove("DROPGUARD_LOG")
        .output()
        .expect("running dropguard demo")
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_demo_plays_the_whole_runbook_and_leaves_nothing_behind() {
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let output = demo(&[], cwd.path(), tmp.path());
    let said = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{said}\n{}", stderr(&output));
    // The timeline, in the runbook's order.
    let mut from = 0;
    for wanted in [
        "release v2 lands",
        "preserved before migrate: snapshot",
        "shop.0003_retire_legacy_sku_and_gift_cards applied, the data is gone",
        "dropguard saw the deploy",
        "an old replica still on v1 fails",
        "opened:",
        "Slack (the loopback receiver) got:",
        "no such column: shop_product.legacy_sku",
        "Roll back the schema:",
        "python manage.py migrate shop 0002_customer_phone",
        "dropguard incidents approve",
        "done restore:",
        "done verification: 2 object(s), 240 rows: each equal to its snapshot",
        "Slack got the follow-up:",
        "table shop_giftcard: 40 of 40 rows written back, verified (checksum)",
        "hold exactly the data of before the release (240 rows)",
        "dropguard stopped cleanly; the temporary directory is removed",
    ] {
        let Some(at) = said[from..].find(wanted) else {
            panic!("{wanted:?} missing, or out of order, in:\n{said}");
        };
        from += at;
    }
    // Quiet: the narration only, no daemon log.
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
    assert!(entries(cwd.path()).is_empty(), "{:?}", entries(cwd.path()));
}

#[test]
fn demo_dir_keeps_the_files_for_the_cli_and_refuses_a_dir_in_use() {
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = cwd.path().join("kept");
    let dir_arg = dir.display().to_string();
    let output = demo(&["--dir", &dir_arg], cwd.path(), tmp.path());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("everything is kept in"));
    for file in ["dropguard.toml", "shop.db", "logs", "project", "state"] {
        assert!(dir.join(file).exists(), "{file} missing from {dir_arg}");
    }
    // The daemon is gone; the CLI reads its journal.
    let listed = Command::new(BIN)
        .args(["incidents", "list", "--json", "--config"])
        .arg(dir.join("dropguard.toml"))
        .output()
        .unwrap();
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let incidents: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(incidents.as_array().unwrap().len(), 1, "{incidents:#}");
    assert_eq!(incidents[0]["state"], "restored");

    let again = demo(&["--dir", &dir_arg], cwd.path(), tmp.path());
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("is not empty"),
        "{}",
        stderr(&again)
    );
    assert!(entries(tmp.path()).is_empty());
}

/// Issue 17, item 11: `demo --dir rel` failed with "configuration is invalid (a
/// bug)", its config naming `rel/rel/project`.
#[test]
fn demo_dir_given_as_a_relative_path_plays_the_whole_runbook_there() {
    let cwd = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let output = demo(&["--dir", "rel/kept"], cwd.path(), tmp.path());
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).contains("hold exactly the data of before the release"));
    let dir = cwd.path().join("rel/kept");
    for file in ["dropguard.toml", "shop.db", "logs", "project", "state"] {
        assert!(
            dir.join(file).exists(),
            "{file} missing from {}",
            dir.display()
        );
    }
    assert!(!dir.join("rel").exists(), "paths were doubled");
    let config = std::fs::read_to_string(dir.join("dropguard.toml")).unwrap();
    let project = dir.join("project");
    assert!(
        config.contains(&format!("project_dir = \"{}\"", project.display())),
        "{config}"
    );
    // The config it kept works from anywhere: the CLI reads its journal.
    let listed = Command::new(BIN)
        .args(["incidents", "list", "--json", "--config"])
        .arg(dir.join("dropguard.toml"))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
}
