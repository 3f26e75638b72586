//! Showing configured values without their secrets: URLs without userinfo, path, query or
//! fragment ([`redact_url`]); which keys hold secrets ([`is_sensitive_key`]); and parser
//! messages with quoted values masked ([`mask_quoted`]). Anything shown to a user or
//! written to a log about a configured URL goes through [`redact_url`].

/// A URL as it may be shown: scheme, host and port only. Userinfo becomes `…@`, and a path,
/// query or fragment becomes `/…` (a webhook's token often sits in its path), so
/// `https://user:pw@hooks.example/T0KEN?key=abc` shows as `https://…@hooks.example/…`. A
/// value that does not parse as a URL with a host is never shown: only its length, and its
/// scheme when that is `http` or `https`.
pub fn redact_url(s: &str) -> String {
    let url = reqwest::Url::parse(s).ok().filter(|u| u.has_host());
    let Some(url) = url else {
        let len = s.chars().count();
        let scheme = s
            .split_once(':')
            .map(|(sch, _)| sch.to_ascii_lowercase())
            .filter(|sch| sch == "http" || sch == "https");
        return match scheme {
            Some(sch) => format!("({sch} URL of {len} characters, not shown)"),
            None => format!("(value of {len} characters, not shown)"),
        };
    };
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str("…@");
    }
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    let more = !url.path().trim_start_matches('/').is_empty()
        || url.query().is_some()
        || url.fragment().is_some();
    if more {
        out.push_str("/…");
    }
    out
}

/// Whether the config key `key` (e.g. `s3.secret_access_key`, `camera[0].url`) may hold a
/// secret, so that its value is never quoted: keys, passwords and tokens, and URLs (which
/// may carry credentials).
pub fn is_sensitive_key(key: &str) -> bool {
    // `wifi.passwords.<ssid>`: the last segment is an SSID, the value a password.
    if key
        .split('.')
        .any(|seg| seg.eq_ignore_ascii_case("passwords"))
    {
        return true;
    }
    let last = key
        .rsplit('.')
        .next()
        .unwrap_or(key)
        .split('[')
        .next()
        .unwrap_or(key)
        .to_ascii_lowercase();
    ["secret", "password", "passwd", "token", "credential"]
        .iter()
        .any(|w| last.contains(w))
        || ["url", "webhook", "endpoint"].contains(&last.as_str())
}

/// `message` with the contents of every quoted part (`"…"`, `'…'` or `` `…` ``) replaced by
/// `***`: serde quotes the offending value ("invalid type: integer `123`, expected a
/// string"), which must not be shown for a secret.
pub fn mask_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut open: Option<char> = None;
    for c in message.chars() {
        match open {
            Some(q) if c == q => {
                out.push_str("***");
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if matches!(c, '"' | '`' | '\'') {
                    open = Some(c);
                }
            }
        }
    }
    if open.is_some() {
        out.push_str("***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_userinfo_path_query_and_fragment() {
        let hook = "https://user:pw@hooks.example.invalid/T0KEN?key=abc";
        assert_eq!(redact_url(hook), "https://…@hooks.example.invalid/…");
        assert_eq!(
            redact_url("http://192.168.43.1:2345"),
            "http://192.168.43.1:2345"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9000/"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(redact_url("http://h/#frag"), "http://h/…");
        assert_eq!(
            redact_url("http://[::1]:80x"),
            "(http URL of 16 characters, not shown)"
        );
        for bad in [
            "https://user:pw@hooks.example.invalid:99999/T0KEN?key=abc",
            "T0KEN-not-a-url",
            "htt:p//x",
        ] {
            let shown = redact_url(bad);
            assert!(!shown.contains("T0KEN") && !shown.contains("pw"), "{shown}");
            assert!(shown.contains(&bad.chars().count().to_string()), "{shown}");
        }
    }

    #[test]
    fn sensitive_keys() {
        for k in [
            "s3.secret_access_key",
            "notify.webhook",
            "camera[0].url",
            "s3.endpoint",
            "camera[1].password",
            "wifi.passwords.queclinkgh",
            "wifi.passwords",
            "x.api_token",
        ] {
            assert!(is_sensitive_key(k), "{k}");
        }
        for k in [
            "s3.bucket",
            "sync.poll_interval",
            "s3.access_key_id",
            "camera[0].name",
            "camera[0].ssid",
            "wifi.interface",
        ] {
            assert!(!is_sensitive_key(k), "{k}");
        }
    }

    #[test]
    fn quoted_values_are_masked() {
        assert_eq!(
            mask_quoted("invalid type: integer `12345`, expected a string"),
            "invalid type: integer `***`, expected a string"
        );
        assert_eq!(mask_quoted("bad \"hunter2"), "bad \"***");
        assert_eq!(mask_quoted("no quotes"), "no quotes");
    }
}
