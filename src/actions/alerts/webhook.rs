//! The generic webhook body: `{"event": "incident.opened", "incident": {…}}`,
//! the incident in the same JSON form the API serves, so one parser serves both.

use serde_json::{Value, json};

use super::Event;
use crate::detect::incident::Incident;

pub fn body(event: Event, incident: &Incident) -> Value {
    json!({
        "event": event.as_str(),
        "incident": incident,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::alerts::slack::tests::{ID, incident};

    #[test]
    fn the_body_names_the_event_and_carries_the_incident_as_the_api_shows_it() {
        let incident = incident();
        let opened = body(Event::Opened, &incident);
        assert_eq!(opened["event"], "incident.opened");
        assert_eq!(opened["incident"]["id"], ID);
        assert_eq!(opened["incident"], serde_json::to_value(&incident).unwrap());
        assert_eq!(
            body(Event::Dismissed, &incident)["event"],
            "incident.dismissed"
        );
    }
}
