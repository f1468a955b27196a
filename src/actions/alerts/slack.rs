//! The Slack incoming-webhook message: a `text` fallback (notifications, old
//! clients) and Block Kit `blocks` with the evidence and the next commands.
//!
//! Slack limits a section's text to 3000 characters and a header's to 150;
//! everything taken from logs is truncated and escaped (`&`, `<`, `>`) so a
//! sample line cannot mention a channel or break the layout.

use serde_json::{Value, json};

use super::{Event, Links};
use crate::detect::incident::{Change, Incident, StepAction};
use crate::detect::mask;

/// Characters of the sample error shown.
const SAMPLE_CHARS: usize = 600;
/// Slack's limit for a section's text, with room for the ellipsis.
const SECTION_CHARS: usize = 2900;
const HEADER_CHARS: usize = 150;

/// The message for `event` of `incident`: the full alert for an opened (or
/// updated) incident, a short follow-up once it is restored or dismissed.
pub fn message(event: Event, incident: &Incident, links: &Links) -> Value {
    if event.ends() {
        follow_up(event, incident)
    } else {
        alert(incident, links)
    }
}

fn alert(incident: &Incident, links: &Links) -> Value {
    let env = &incident.environment;
    let text = format!("[{env}] {}", incident.headline);
    let migrations: Vec<String> = incident
        .deploy
        .migrations
        .iter()
        .map(|m| format!("`{}`", escape(&m.migration)))
        .collect();
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {"type": "plain_text", "text": cut(&format!("dropguard incident in {env}"), HEADER_CHARS)},
        }),
        section(&format!(
            "*{}*\n*Environment:* {}\n*Migration:* {}\n*Errors tied to dropped objects:* {}",
            escape(&incident.headline),
            escape(env),
            if migrations.is_empty() {
                "unknown".to_string()
            } else {
                migrations.join(", ")
            },
            incident.errors,
        )),
    ];
    if !incident.objects.is_empty() {
        let lines: Vec<String> = incident
            .objects
            .iter()
            .map(|o| {
                let name = match &o.column {
                    Some(column) => format!("{}.{column}", o.table),
                    None => o.table.clone(),
                };
                let how = match o.change {
                    Change::Dropped => "dropped",
                    Change::Renamed => "renamed",
                };
                format!(
                    "• `{}` — {} error{} ({how} by `{}`)",
                    escape(&name),
                    o.errors,
                    if o.errors == 1 { "" } else { "s" },
                    escape(&o.migration)
                )
            })
            .collect();
        blocks.push(section(&format!(
            "*Errors per dropped object*\n{}",
            lines.join("\n")
        )));
    }
    if let Some(sample) = incident.samples.first() {
        blocks.push(section(&format!(
            "*Sample error* ({}, {})\n```{}```",
            escape(&sample.source),
            sample.at.format("%Y-%m-%d %H:%M:%S UTC"),
            // The first line and the end, where a traceback names the error.
            escape(&mask::sample(&sample.text, SAMPLE_CHARS)).replace("```", "'''")
        )));
    }
    let mut snapshots = Vec::new();
    let mut steps = Vec::new();
    for migration in incident.destructive() {
        match &migration.snapshot {
            Some(snapshot) => snapshots.push(format!(
                "• `{}`: snapshot `{}`, {} row{}",
                escape(&migration.migration),
                escape(&snapshot.id),
                snapshot.rows,
                if snapshot.rows == 1 { "" } else { "s" }
            )),
            None => snapshots.push(format!(
                "• `{}`: *no snapshot* — its data was not preserved",
                escape(&migration.migration)
            )),
        }
        if let Some(command) = &migration.rollback_command {
            steps.push(format!(
                "Roll back the schema:\n```{}```",
                code(command, SAMPLE_CHARS)
            ));
        }
        if let Some(snapshot) = &migration.snapshot {
            steps.push(format!(
                "Then restore the data:\n```dropguard restore --snapshot {}```",
                code(&snapshot.id, SAMPLE_CHARS)
            ));
        }
    }
    if !snapshots.is_empty() {
        blocks.push(section(&format!(
            "*Preserved data*\n{}",
            snapshots.join("\n")
        )));
    }
    steps.push(format!(
        "Or let dropguard roll back and restore (`restore.mode = \"approve\"`):\n```dropguard incidents approve {}```\nor through the API:\n```curl -X POST -H \"Authorization: Bearer $DROPGUARD_API_TOKEN\" {}/api/v1/incidents/{}/restore```",
        code(&incident.id, SAMPLE_CHARS),
        code(&links.api_base, SAMPLE_CHARS),
        code(&incident.id, SAMPLE_CHARS)
    ));
    blocks.push(section(&format!("*Next steps*\n{}", steps.join("\n"))));
    blocks.push(json!({
        "type": "context",
        "elements": [{
            "type": "mrkdwn",
            "text": format!(
                "incident `{}` · opened {} · `dropguard incidents show {}`",
                escape(&incident.id),
                incident.opened_at.format("%Y-%m-%d %H:%M:%S UTC"),
                escape(&incident.id)
            ),
        }],
    }));
    json!({ "text": text, "blocks": blocks })
}

fn follow_up(event: Event, incident: &Incident) -> Value {
    let env = &incident.environment;
    let (word, emoji) = match event {
        Event::Dismissed => ("Dismissed", ":white_circle:"),
        _ => ("Restored", ":white_check_mark:"),
    };
    let note = incident
        .history
        .last()
        .map(|t| t.note.as_str())
        .unwrap_or_default();
    let text = format!("[{env}] {word}: {}", incident.headline);
    let mut body = format!(
        "{emoji} *{word}* ({}): {}",
        escape(env),
        escape(&incident.headline)
    );
    if !note.is_empty() {
        body.push('\n');
        body.push_str(&escape(note));
    }
    if let Some(run) = incident
        .restore
        .as_ref()
        .filter(|_| event == Event::Restored)
    {
        for step in &run.steps {
            match (&step.action, &step.rows, &step.command) {
                (StepAction::Rollback { argv, .. }, _, Some(_)) => {
                    body.push_str(&format!(
                        "\n• rolled back with `{}`",
                        code(&argv.join(" "), SAMPLE_CHARS)
                    ));
                }
                (StepAction::Restore { table, columns, .. }, Some(rows), _) => {
                    let what = if columns.is_empty() {
                        format!("table {table}")
                    } else {
                        format!("{table}.{}", columns.join(","))
                    };
                    body.push_str(&format!(
                        "\n• `{}`: {} of {} rows written back, verified ({})",
                        code(&what, HEADER_CHARS),
                        rows.written,
                        rows.snapshot_rows,
                        escape(&rows.verification)
                    ));
                }
                _ => {}
            }
        }
    }
    json!({
        "text": text,
        "blocks": [
            section(&body),
            {
                "type": "context",
                "elements": [{
                    "type": "mrkdwn",
                    "text": format!("incident `{}` · {}", escape(&incident.id), incident.state.as_str()),
                }],
            },
        ],
    })
}

fn section(text: &str) -> Value {
    json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": cut(text, SECTION_CHARS)},
    })
}

/// Slack's three control characters escaped, as its docs ask.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for inside a code block: escaped, truncated, and unable to close it.
fn code(text: &str, max: usize) -> String {
    escape(&cut(text, max)).replace("```", "'''")
}

/// At most `max` characters, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::detect::incident::{
        DeployInfo, DeployedMigration, DroppedObject, ObjectEvidence, RestoreRun, RestoredRows,
        RunStatus, Sample, SnapshotRef, State, Step, StepStatus, Transition, Trigger,
    };
    use crate::event::DeployOrigin;

    pub const ID: &str = "01JDQZ5Y8N4K6W2P3R7T9V1X0A";
    pub const SNAPSHOT: &str = "01JDQZ0000SNAPSHOT00000000";

    /// The incident of the reference user's runbook: catalog 0016 dropped
    /// `catalog_product.brand_code`, an old replica still selects it.
    pub fn incident() -> Incident {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 16, 20, 0).unwrap();
        Incident {
            id: ID.into(),
            state: State::Open,
            environment: "stage".into(),
            opened_at: at,
            updated_at: at,
            headline: "8 errors on catalog_product.brand_code after catalog.0016_remove_product_brand dropped it".into(),
            triggers: vec![Trigger::Errors],
            deploy: DeployInfo {
                at,
                origins: vec![DeployOrigin::DjangoMigrations],
                release: None,
                migrations: vec![DeployedMigration {
                    migration: "catalog.0016_remove_product_brand".into(),
                    previous: Some("0015_delete_digitalproduct".into()),
                    rollback_command: Some(
                        "python manage.py migrate catalog 0015_delete_digitalproduct".into(),
                    ),
                    destructive: true,
                    snapshot: Some(SnapshotRef {
                        id: SNAPSHOT.into(),
                        rows: 1200,
                    }),
                    objects: vec![DroppedObject {
                        table: "catalog_product".into(),
                        columns: vec!["brand_code".into()],
                        change: Change::Dropped,
                        migration: "catalog.0016_remove_product_brand".into(),
                    }],
                    in_use: Vec::new(),
                }],
                more_migrations: 0,
            },
            errors: 8,
            traceback_errors: 8,
            objects: vec![ObjectEvidence {
                table: "catalog_product".into(),
                column: Some("brand_code".into()),
                change: Change::Dropped,
                migration: "catalog.0016_remove_product_brand".into(),
                errors: 8,
                first_seen: at,
                last_seen: at,
                sources: vec!["/var/log/app/app.log".into()],
            }],
            rates: Vec::new(),
            samples: vec![Sample {
                at,
                source: "/var/log/app/app.log".into(),
                text: format!(
                    "ERROR django.request Internal Server Error: /catalog/ <@channel> ```\n{}\ndjango.db.utils.OperationalError: no such column: catalog_product.brand_code",
                    "  File \"x.py\", line 1, in f\n".repeat(100)
                ),
            }],
            history: vec![Transition {
                at,
                state: State::Open,
                note: "8 errors within 60s".into(),
            }],
            restore: None,
        }
    }

    pub fn links() -> Links {
        Links {
            api_base: "http://127.0.0.1:9187".into(),
        }
    }

    fn all_text(value: &Value) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn the_alert_has_a_fallback_and_blocks_with_evidence_and_commands() {
        let message = message(Event::Opened, &incident(), &links());
        let text = message["text"].as_str().unwrap();
        assert!(
            text.contains("[stage]") && text.contains("catalog_product.brand_code"),
            "{text}"
        );
        let blocks = message["blocks"].as_array().unwrap();
        assert!(blocks.len() >= 5, "{blocks:#?}");
        let shown: String = blocks
            .iter()
            .filter_map(|b| b["text"]["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        for expected in [
            "stage",
            "catalog.0016_remove_product_brand",
            "`catalog_product.brand_code` — 8 errors (dropped by `catalog.0016_remove_product_brand`)",
            "no such column: catalog_product.brand_code",
            SNAPSHOT,
            "1200 rows",
            "```python manage.py migrate catalog 0015_delete_digitalproduct```",
            &format!("```dropguard restore --snapshot {SNAPSHOT}```"),
            &format!(
                "curl -X POST -H \"Authorization: Bearer $DROPGUARD_API_TOKEN\" http://127.0.0.1:9187/api/v1/incidents/{ID}/restore"
            ),
        ] {
            assert!(
                shown.contains(expected),
                "{expected:?} missing from:\n{shown}"
            );
        }
    }

    #[test]
    fn a_sample_line_is_truncated_escaped_and_cannot_break_its_code_block() {
        let message = message(Event::Opened, &incident(), &links());
        let sample = message["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["text"]["text"].as_str())
            .find(|t| t.starts_with("*Sample error*"))
            .unwrap()
            .to_string();
        assert!(sample.chars().count() < 800, "{}", sample.len());
        assert!(sample.contains("&lt;@channel&gt;"), "{sample}");
        assert!(
            sample.contains("OperationalError: no such column: catalog_product.brand_code"),
            "the traceback's error line is what a reader needs: {sample}"
        );
        assert_eq!(sample.matches("```").count(), 2, "{sample}");
        for block in message["blocks"].as_array().unwrap() {
            if let Some(text) = block["text"]["text"].as_str() {
                assert!(text.chars().count() <= 3000);
            }
        }
    }

    #[test]
    fn the_message_carries_no_secret() {
        // The only secrets near an alert are the receivers' URLs and the API
        // token; the builder is never given either, and says where the token is.
        let message = all_text(&message(Event::Opened, &incident(), &links()));
        assert!(message.contains("$DROPGUARD_API_TOKEN"));
        assert!(!message.contains("hooks.slack.com"));
    }

    #[test]
    fn an_unpreserved_drop_says_so_and_offers_no_restore() {
        let mut incident = incident();
        incident.deploy.migrations[0].snapshot = None;
        let shown = all_text(&message(Event::Opened, &incident, &links()));
        assert!(shown.contains("*no snapshot*"), "{shown}");
        assert!(!shown.contains("dropguard restore --snapshot"), "{shown}");
        assert!(shown.contains("migrate catalog 0015_delete_digitalproduct"));
    }

    #[test]
    fn a_restore_or_dismissal_gets_a_short_follow_up() {
        let mut incident = incident();
        incident.state = State::Restored;
        incident.history.push(Transition {
            at: incident.updated_at,
            state: State::Restored,
            note: format!("snapshot {SNAPSHOT} restored and verified"),
        });
        let mut restore = Step::pending(StepAction::Restore {
            snapshot: SNAPSHOT.into(),
            object: 0,
            table: "catalog_product".into(),
            columns: vec!["brand_code".into()],
        });
        restore.status = StepStatus::Done;
        restore.rows = Some(RestoredRows {
            snapshot_rows: 1500,
            written: 1500,
            unchanged: 0,
            conflicts: 0,
            missing: 0,
            verification: "checksum".into(),
        });
        incident.restore = Some(RestoreRun {
            requested_at: incident.updated_at,
            requested_by: "api".into(),
            force: false,
            status: RunStatus::Done,
            steps: vec![restore],
            error: None,
            finished_at: Some(incident.updated_at),
        });
        let resolved = message(Event::Restored, &incident, &links());
        assert!(
            resolved["text"]
                .as_str()
                .unwrap()
                .starts_with("[stage] Restored:")
        );
        assert!(all_text(&resolved).contains("restored and verified"));
        assert!(
            all_text(&resolved).contains(
                "`catalog_product.brand_code`: 1500 of 1500 rows written back, verified (checksum)"
            ),
            "{}",
            all_text(&resolved)
        );
        assert!(!all_text(&resolved).contains("curl"));
        incident.state = State::Dismissed;
        let dismissed = message(Event::Dismissed, &incident, &links());
        assert!(
            dismissed["text"]
                .as_str()
                .unwrap()
                .starts_with("[stage] Dismissed:")
        );
    }
}
