//! The configuration file (TOML with `${VAR}` expansion), and what `check-config`
//! prints of it: valid TOML with every secret masked.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

const ENV_SECRET: &str = "env-secret-4f1c9a77d2";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name != "UNSET").then(|| ENV_SECRET.to_string());
    let Ok(config) = dropguard::config::parse(text, Path::new("/etc/dropguard"), &env) else {
        return;
    };
    let masked = config.to_masked_toml();
    let shown: toml::Table = toml::from_str(&masked)
        .unwrap_or_else(|err| panic!("check-config output is not TOML: {err}\n{masked}"));
    // The database URL shows no password.
    let shown_url = shown
        .get("database")
        .and_then(|d| d.get("url"))
        .and_then(|u| u.as_str())
        .unwrap_or_default();
    // Nor does it, or vault.endpoint, show a password or token given as a query
    // parameter (`?password=`, `?sslpassword=`, `?token=`).
    let shown_endpoint = shown
        .get("vault")
        .and_then(|v| v.get("endpoint"))
        .and_then(|u| u.as_str())
        .unwrap_or_default();
    for shown_url in [shown_url, shown_endpoint] {
        let Ok(url) = url::Url::parse(shown_url) else {
            continue;
        };
        assert!(
            url.password().is_none_or(|p| p == "********"),
            "a URL shown with its password: {shown_url}"
        );
        for (name, value) in url.query_pairs() {
            let name = name.to_ascii_lowercase();
            let named = ["password", "passwd", "pwd", "secret", "token"];
            if !value.is_empty() && named.iter().any(|w| name.contains(w)) {
                assert_eq!(value, "********", "{name} shown in {shown_url}");
            }
        }
    }
    if let Some(token) = &config.server.api_token {
        let shown_token = shown
            .get("server")
            .and_then(|s| s.get("api_token"))
            .and_then(|t| t.as_str());
        assert_eq!(shown_token, Some("********"), "api_token {token:?} shown");
    }
});
