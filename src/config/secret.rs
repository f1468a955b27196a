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

/// Whether a URL query parameter of this name carries a credential: `password`,
/// libpq's `sslpassword`, `passwd`, `pwd`, `secret`, `token`, `api_key`,
/// `access_key`, `X-Amz-Signature`, Azure's `sig`… Case, `-` and `_` do not matter.
/// Parameters naming a file (`sslkey`, `sslcert`, `sslrootcert`, `passfile`) are not
/// credentials: the file is, and it stays where it is.
fn is_credential_parameter(name: &str) -> bool {
    let folded: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const FILES: [&str; 8] = [
        "sslkey",
        "sslcert",
        "sslrootcert",
        "sslca",
        "sslcrl",
        "sslcapath",
        "passfile",
        "sslkeylogfile",
    ];
    if FILES.contains(&folded.as_str()) {
        return false;
    }
    const WORDS: [&str; 11] = [
        "pass",
        "pwd",
        "secret",
        "token",
        "credential",
        "signature",
        "apikey",
        "accesskey",
        "privatekey",
        "secretkey",
        "auth",
    ];
    WORDS.iter().any(|word| folded.contains(word))
        || matches!(
            folded.as_str(),
            "key" | "sig" | "code" | "session" | "sessionid"
        )
}

/// `text` as a URL with every credential masked: the userinfo's password, the
/// value of each query parameter [`is_credential_parameter`] names, and the
/// fragment. The rest (scheme, user, host, port, path, other parameters) is kept
/// as written, so a reader can check where it points. `None` when `text` is not a
/// URL at all (then nothing of it can be shown safely).
fn mask_credentials(text: &str) -> Option<String> {
    let mut url = url::Url::parse(text).ok()?;
    let mut changed = false;
    if url.password().is_some() {
        // set_password only fails on URLs that cannot have one, ruled out above.
        let _ = url.set_password(Some(MASK));
        changed = true;
    }
    if let Some(query) = url.query().map(str::to_string) {
        let mut masked_any = false;
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
                let name = url::form_urlencoded::parse(raw_name.as_bytes())
                    .next()
                    .map(|(name, _)| name.into_owned())
                    .unwrap_or_default();
                if pair.contains('=') && is_credential_parameter(&name) {
                    masked_any = true;
                    format!("{raw_name}={MASK}")
                } else {
                    pair.to_string()
                }
            })
            .collect();
        if masked_any {
            url.set_query(Some(&pairs.join("&")));
            changed = true;
        }
    }
    if url.fragment().is_some_and(|fragment| !fragment.is_empty()) {
        url.set_fragment(Some(MASK));
        changed = true;
    }
    Some(if changed {
        url.to_string()
    } else {
        text.to_string()
    })
}

/// The credentials of the URL `text` as they may appear in someone else's error
/// message (raw and percent-decoded): what [`scrub`] removes.
fn credentials_of(text: &str) -> Vec<String> {
    let Ok(url) = url::Url::parse(text) else {
        return vec![text.to_string()];
    };
    let mut found = Vec::new();
    let mut push = |raw: &str| {
        let decoded = url::form_urlencoded::parse(format!("x={raw}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default();
        for candidate in [raw.to_string(), decoded] {
            if !candidate.is_empty() && !found.contains(&candidate) {
                found.push(candidate);
            }
        }
    };
    if let Some(password) = url.password() {
        push(password);
    }
    for pair in url.query().unwrap_or_default().split('&') {
        if let Some((raw_name, value)) = pair.split_once('=') {
            let name = url::form_urlencoded::parse(raw_name.as_bytes())
                .next()
                .map(|(name, _)| name.into_owned())
                .unwrap_or_default();
            if is_credential_parameter(&name) {
                push(value);
            }
        }
    }
    if let Some(fragment) = url.fragment() {
        push(fragment);
    }
    // Longest first, so that a secret containing another is replaced whole.
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found
}

/// `text` with every credential of the URL `url` replaced by the mask: a last
/// guard for error messages of libraries that quote the URL they were given.
fn scrub(text: &str, url: &str) -> String {
    let mut scrubbed = text.to_string();
    for secret in credentials_of(url) {
        scrubbed = scrubbed.replace(&secret, MASK);
    }
    scrubbed
}

/// A URL that may carry credentials (the password in its userinfo, or a query
/// parameter such as `?password=` or `?sslpassword=`): they are masked, the rest
/// (host, database, bucket) is shown, so the reader can check it points at the
/// right place.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CredentialUrl(String);

/// `database.url`.
pub type DatabaseUrl = CredentialUrl;
/// `vault.endpoint`, `vault.url`.
pub type EndpointUrl = CredentialUrl;

impl CredentialUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        mask_credentials(&self.0).unwrap_or_else(|| MASK.to_string())
    }

    /// `text` (a driver's or client library's error message, say) with this
    /// URL's credentials masked.
    pub fn scrub(&self, text: &str) -> String {
        scrub(text, &self.0)
    }
}

impl fmt::Debug for CredentialUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for CredentialUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for CredentialUrl {
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
    fn a_password_given_as_a_query_parameter_is_masked_like_one_in_the_userinfo() {
        for (url, secrets, shown) in [
            (
                "postgres://app@db:5432/shop?password=qp-secret",
                vec!["qp-secret"],
                "postgres://app@db:5432/shop?password=********",
            ),
            (
                "postgres://app:ui-secret@db/shop?sslmode=require&sslpassword=ssl-secret&sslrootcert=/etc/ca.pem",
                vec!["ui-secret", "ssl-secret"],
                "postgres://app:********@db/shop?sslmode=require&sslpassword=********&sslrootcert=/etc/ca.pem",
            ),
            (
                "mysql://root@db:3306/edxapp?ssl-mode=required&PASSWORD=upper-secret&pwd=pwd-secret",
                vec!["upper-secret", "pwd-secret"],
                "mysql://root@db:3306/edxapp?ssl-mode=required&PASSWORD=********&pwd=********",
            ),
            (
                "mariadb://root@db/app?passwd=pw-secret&token=tok-secret&api_key=key-secret&secret=s-secret",
                vec!["pw-secret", "tok-secret", "key-secret", "s-secret"],
                "mariadb://root@db/app?passwd=********&token=********&api_key=********&secret=********",
            ),
            (
                "postgres://app@db/shop?pass%77ord=encoded-name-secret#frag-secret",
                vec!["encoded-name-secret", "frag-secret"],
                "postgres://app@db/shop?pass%77ord=********#********",
            ),
            (
                "sqlite:///srv/app.db?mode=rwc",
                vec![],
                "sqlite:///srv/app.db?mode=rwc",
            ),
        ] {
            let db = DatabaseUrl::new(url);
            assert_eq!(db.masked(), shown, "{url}");
            let endpoint = EndpointUrl::new(url);
            assert_eq!(endpoint.masked(), shown, "{url}");
            for secret in secrets {
                for text in [
                    db.masked(),
                    format!("{db:?}"),
                    serde_json::to_string(&db).unwrap(),
                    format!("{endpoint}"),
                    db.scrub(&format!("error talking to {url}: refused")),
                    endpoint.scrub(&format!("GET {url}/bucket?list-type=2 failed")),
                ] {
                    assert!(!text.contains(secret), "{secret} shown: {text}");
                }
            }
        }
        // Not a URL: nothing of it is shown.
        assert_eq!(DatabaseUrl::new("host=db password=x").masked(), MASK);
    }

    #[test]
    fn userinfo_of_an_endpoint_is_masked_and_the_host_kept() {
        let url = EndpointUrl::new("https://minio:minio-secret@minio.internal:9000");
        assert_eq!(url.masked(), "https://minio:********@minio.internal:9000/");
        let scrubbed = url.scrub(
            "Error performing GET https://minio:minio-secret@minio.internal:9000/bucket in 2s",
        );
        assert!(!scrubbed.contains("minio-secret"), "{scrubbed}");
        assert!(
            scrubbed.contains("minio.internal:9000/bucket"),
            "{scrubbed}"
        );
        let plain = EndpointUrl::new("http://127.0.0.1:9000");
        assert_eq!(plain.masked(), "http://127.0.0.1:9000");
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
