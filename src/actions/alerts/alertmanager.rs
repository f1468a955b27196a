//! The Alertmanager body for `POST /api/v2/alerts`: an array of one alert whose
//! labels identify the incident (so every message about it is the same alert)
//! and whose `endsAt` is set once it is restored or dismissed.
//!
//! Alertmanager resolves an alert by itself `resolve_timeout` (5 min by default)
//! after it was last posted unless `endsAt` is later; the opened alert carries
//! no `endsAt`, so a long incident needs re-posting — not done yet.

use serde_json::{Map, Value, json};

use super::{Event, Links};
use crate::detect::incident::Incident;

pub const ALERTNAME: &str = "DropguardIncident";

pub fn body(event: Event, incident: &Incident, links: &Links) -> Value {
    let migration = incident
        .destructive()
        .chain(incident.deploy.migrations.iter())
        .map(|m| m.migration.as_str())
        .next()
        .unwrap_or_default();
    let objects: Vec<String> = incident
        .objects
        .iter()
        .map(|o| match &o.column {
            Some(column) => format!("{}.{column}: {} errors", o.table, o.errors),
            None => format!("{}: {} errors", o.table, o.errors),
        })
        .collect();
    let mut description = format!(
        "{} correlated errors after {}.",
        incident.errors,
        if migration.is_empty() {
            "a deploy"
        } else {
            migration
        }
    );
    if !objects.is_empty() {
        description.push(' ');
        description.push_str(&objects.join("; "));
        description.push('.');
    }
    for m in incident.destructive() {
        if let Some(command) = &m.rollback_command {
            description.push_str(&format!(" Roll back: {command}."));
        }
        if let Some(snapshot) = &m.snapshot {
            description.push_str(&format!(
                " Restore: dropguard restore --snapshot {}.",
                snapshot.id
            ));
        }
    }
    let mut alert = Map::new();
    alert.insert(
        "labels".into(),
        json!({
            "alertname": ALERTNAME,
            "environment": incident.environment,
            "migration": migration,
            "incident": incident.id,
        }),
    );
    alert.insert(
        "annotations".into(),
        json!({
            "summary": incident.headline,
            "description": description,
            "state": incident.state.as_str(),
        }),
    );
    alert.insert("startsAt".into(), json!(incident.opened_at.to_rfc3339()));
    if event.ends() {
        alert.insert("endsAt".into(), json!(incident.updated_at.to_rfc3339()));
    }
    alert.insert(
        "generatorURL".into(),
        json!(format!(
            "{}/api/v1/incidents/{}",
            links.api_base, incident.id
        )),
    );
    Value::Array(vec![Value::Object(alert)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::alerts::slack::tests::{ID, incident, links};

    #[test]
    fn one_alert_labelled_by_incident_and_migration() {
        let body = body(Event::Opened, &incident(), &links());
        let alerts = body.as_array().unwrap();
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        assert_eq!(alert["labels"]["alertname"], ALERTNAME);
        assert_eq!(alert["labels"]["environment"], "stage");
        assert_eq!(
            alert["labels"]["migration"],
            "catalog.0016_remove_product_brand"
        );
        assert_eq!(alert["labels"]["incident"], ID);
        assert!(
            alert["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("catalog_product.brand_code")
        );
        let description = alert["annotations"]["description"].as_str().unwrap();
        assert!(
            description.contains("catalog_product.brand_code: 8 errors")
                && description.contains("migrate catalog 0015_delete_digitalproduct"),
            "{description}"
        );
        assert_eq!(alert["startsAt"], "2026-11-25T16:20:00+00:00");
        assert!(alert.get("endsAt").is_none());
    }

    #[test]
    fn a_restored_incident_ends_its_alert() {
        let mut incident = incident();
        incident.updated_at += chrono::Duration::minutes(7);
        let body = body(Event::Restored, &incident, &links());
        assert_eq!(body[0]["endsAt"], "2026-11-25T16:27:00+00:00");
        assert_eq!(body[0]["labels"]["incident"], ID);
    }
}
