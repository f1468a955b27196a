//! Values that must never be shown whole: in logs, `check-config`, /metrics or the API.
//!
//! Each type keeps the real value for the code that needs it (`expose()`), and its
//! `Debug` and `Serialize` show only the masked form, so printing a config or logging
//! a struct with `?` cannot leak it.

use std::fmt;

use serde::{Deserialize, Serialize};

const MASK: &str = "********";

/// A token: fully masked.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

/// A URL whose credentials, path and query may carry a secret (a Slack webhook's path
/// is its credential): shown as `scheme://host:port/********`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(url) if url.has_host() => {
                let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
                if let Some(port) = url.port() {
                    shown.push_str(&format!(":{port}"));
                }
                let has_more =
                    url.path() != "/" || url.query().is_some() || !url.username().is_empty();
                if has_more {
                    shown.push('/');
                    shown.push_str(MASK);
                }
                shown
            }
            _ => MASK.to_string(),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

/// A database URL: only the password is masked, the rest (host, database) helps the
/// reader check they point at the right place.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                // set_password only fails on URLs that cannot have one, ruled out above.
                let _ = url.set_password(Some(MASK));
                url.to_string()
            }
            Ok(_) => self.0.clone(),
            Err(_) => MASK.to_string(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_webhook_path_is_masked() {
        let url = SecretUrl::new("https://hooks.slack.com/services/T000/B000/XXXXSECRET");
        assert_eq!(url.masked(), "https://hooks.slack.com/********");
        assert!(!format!("{url:?}").contains("XXXXSECRET"));
    }

    #[test]
    fn database_password_is_masked_and_the_rest_kept() {
        let url = DatabaseUrl::new("postgres://app:hunter2@db.internal:5432/shop");
        assert_eq!(
            url.masked(),
            "postgres://app:********@db.internal:5432/shop"
        );
        let plain = DatabaseUrl::new("sqlite:///srv/app.db");
        assert_eq!(plain.masked(), "sqlite:///srv/app.db");
    }

    #[test]
    fn token_never_shows() {
        let token = Secret::new("s3cr3t");
        assert_eq!(format!("{token:?}"), MASK);
        assert_eq!(
            serde_json::to_string(&token).unwrap(),
            format!("\"{MASK}\"")
        );
    }
}
