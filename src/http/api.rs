//! What the API's handlers check of requests: the body's size and the bearer
//! token (the body of `POST /api/v1/deploys` is read by [`crate::announce`]).
//! Pure functions over header values, so that every rule is unit-tested without
//! a server.
//!
//! Nothing here may put the token, or any part of it, into an error message.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The largest request body the API reads; a larger one is answered 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How a request's credentials compare with the configured token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// No `server.api_token` is configured: mutating endpoints are off.
    NoTokenConfigured,
    /// No `Authorization: Bearer …` header, or the wrong token.
    Denied,
}

/// Checks an `Authorization` header value against the configured token.
///
/// Both tokens are hashed before the constant-time comparison, so that neither
/// the time taken nor an early exit on a length difference tells anything about
/// the configured token.
pub fn authorize(header: Option<&[u8]>, token: Option<&str>) -> Access {
    let Some(token) = token else {
        return Access::NoTokenConfigured;
    };
    let Some(given) = header.and_then(bearer) else {
        return Access::Denied;
    };
    let expected = Sha256::digest(token.as_bytes());
    let given = Sha256::digest(given);
    if bool::from(expected.ct_eq(&given)) {
        Access::Granted
    } else {
        Access::Denied
    }
}

/// The credentials of `Bearer <token>` (the scheme in any case, RFC 9110 §11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let credentials = rest.trim_ascii();
    (!credentials.is_empty()).then_some(credentials)
}

/// Who may use the API on `listen`, as `check-config` says it: on a loopback
/// address the reads are open to local callers (a sidecar's neighbours), and
/// the mutating routes need `server.api_token` when one is set; elsewhere every
/// `/api/v1` route, the reads included (incidents carry log samples), needs it.
/// `/metrics`, `/healthz` and `/readyz` are open either way.
pub fn access_policy(listen: std::net::SocketAddr, token: bool) -> String {
    let open = "/metrics, /healthz and /readyz are open";
    match (listen.ip().is_loopback(), token) {
        (true, true) => format!(
            "server.listen {listen} is a loopback address: GET /api/v1/... is open to local callers, POST needs Authorization: Bearer <server.api_token>; {open}"
        ),
        (true, false) => format!(
            "server.listen {listen} is a loopback address without server.api_token: every /api/v1 route is open to local callers; {open}"
        ),
        (false, true) => format!(
            "server.listen {listen} is not a loopback address: every /api/v1 route, GET included (incidents carry log samples), needs Authorization: Bearer <server.api_token>; {open}"
        ),
        (false, false) => format!(
            "server.listen {listen} is not a loopback address and server.api_token is not set: every /api/v1 route is refused (403); {open}"
        ),
    }
}

/// The body of `POST /api/v1/incidents/ID/restore`: empty, or a JSON object
/// with an optional `force` (overwrite rows changed since the snapshot).
pub fn parse_restore(body: &[u8]) -> Result<bool, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        force: bool,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.force)
        .map_err(|err| {
            format!("the body must be empty or a JSON object like {{\"force\": true}}: {err}")
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restore_body_is_empty_or_names_force_only() {
        assert_eq!(parse_restore(b""), Ok(false));
        assert_eq!(parse_restore(b" \n"), Ok(false));
        assert_eq!(parse_restore(b"{}"), Ok(false));
        assert_eq!(parse_restore(br#"{"force": true}"#), Ok(true));
        let wrong = parse_restore(br#"{"forse": true}"#).unwrap_err();
        assert!(wrong.contains("forse"), "{wrong}");
        assert!(parse_restore(b"force").is_err());
    }

    use super::*;

    #[test]
    fn only_the_configured_bearer_token_is_granted() {
        let token = Some("s3cr3t-token");
        assert_eq!(
            authorize(Some(b"Bearer s3cr3t-token"), token),
            Access::Granted
        );
        assert_eq!(
            authorize(Some(b"bearer s3cr3t-token"), token),
            Access::Granted
        );
        for header in [
            None,
            Some(&b"Bearer wrong"[..]),
            Some(b"Bearer s3cr3t-token2"),
            Some(b"Bearer s3cr3t-toke"),
            Some(b"Bearer "),
            Some(b"Bearer"),
            Some(b"Basic czNjcjN0LXRva2Vu"),
            Some(b"s3cr3t-token"),
        ] {
            assert_eq!(authorize(header, token), Access::Denied, "{header:?}");
        }
        assert_eq!(
            authorize(Some(b"Bearer s3cr3t-token"), None),
            Access::NoTokenConfigured
        );
    }
}
