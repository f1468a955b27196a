//! The command line as a script would see it.

use crate::harness::{Workspace, stderr, stdout};

#[test]
fn commands_of_later_releases_say_not_implemented_and_exit_2() {
    let ws = Workspace::new();
    ws.sqlite_config("");
    let commands: [&[&str]; 6] = [
        &["gate"],
        &["replay", "app.log"],
        &["incidents", "list"],
        &["incidents", "approve", "x"],
        &["incidents", "dismiss", "x"],
        &["demo"],
    ];
    for args in commands {
        let output = ws.run(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains("not implemented yet"),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?} printed output");
    }
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
