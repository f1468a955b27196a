//! The command line as a script would see it.

use crate::harness::{Workspace, stderr, stdout};

#[test]
fn replay_of_a_missing_file_names_it() {
    let ws = Workspace::new();
    ws.sqlite_config("");
    let output = ws.run(&["replay", "missing.log"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("replaying missing.log: opening the file"),
        "{err}"
    );
}

#[test]
fn help_lists_every_command_of_the_design() {
    let output = ws_help();
    for command in [
        "run",
        "scan",
        "gate",
        "preserve",
        "snapshots",
        "restore",
        "replay",
        "incidents",
        "check-config",
        "demo",
    ] {
        assert!(
            output.contains(command),
            "--help lacks {command}:\n{output}"
        );
    }
}

fn ws_help() -> String {
    let output = std::process::Command::new(crate::harness::BIN)
        .arg("--help")
        .output()
        .expect("running dropguard --help");
    assert!(output.status.success());
    stdout(&output)
}
