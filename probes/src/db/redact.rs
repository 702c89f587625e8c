//! Masks passwords in connection strings, so a URL can be shown in a log, an error or a report:
//! `postgres://user:secret@host:5432/db` becomes `postgres://user:****@host:5432/db`.
//!
//! [`redact_url`] handles one URL; [`redact`] finds every URL (and `password=` key/value pair)
//! inside free text such as an error message.

use std::sync::LazyLock;

use regex::Regex;

/// What a password is replaced with.
pub const MASK: &str = "****";

/// One connection URL with its password masked (in the user-info part and in a `password=`
/// query parameter). Text that is not a URL comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return redact_key_values(url);
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..rest_start]);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(&redact_key_values(&rest[authority_len..]));
    out
}

static URL_RE: LazyLock<Regex> = LazyLock::new(|| {
    // Any scheme: a mistyped `--db mysql://user:pass@...` must not leak either.
    Regex::new(r#"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>`]+"#).expect("static regex")
});

static KEY_VALUE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(\bpassword\s*=\s*)('[^']*'|"[^"]*"|[^\s&'"]+)"#).expect("static regex")
});

/// Every connection URL and `password=...` pair in `text`, masked.
pub fn redact(text: &str) -> String {
    let urls = URL_RE.replace_all(text, |caps: &regex::Captures<'_>| redact_url(&caps[0]));
    redact_key_values(&urls)
}

fn redact_key_values(text: &str) -> String {
    KEY_VALUE_RE
        .replace_all(text, |caps: &regex::Captures<'_>| {
            format!("{}{MASK}", &caps[1])
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_password_in_a_url() {
        assert_eq!(
            redact_url("postgres://owner:s3cr:et@db.internal:5432/shop"),
            "postgres://owner:****@db.internal:5432/shop"
        );
        assert_eq!(
            redact_url("postgresql://u:p%40ss@[::1]:5433/db?sslmode=require"),
            "postgresql://u:****@[::1]:5433/db?sslmode=require"
        );
    }

    #[test]
    fn keeps_urls_without_a_password() {
        assert_eq!(
            redact_url("postgres://owner@host/db"),
            "postgres://owner@host/db"
        );
        assert_eq!(redact_url("postgres://host:5432"), "postgres://host:5432");
    }

    #[test]
    fn masks_password_query_parameters_and_key_values() {
        assert_eq!(
            redact_url("postgres://host/db?user=u&password=hunter2&sslmode=disable"),
            "postgres://host/db?user=u&password=****&sslmode=disable"
        );
        assert_eq!(
            redact("host=db user=u password='a b' dbname=x"),
            "host=db user=u password=**** dbname=x"
        );
    }

    #[test]
    fn masks_every_url_inside_text() {
        let text = "cannot reach postgres://a:one@h1/db, then POSTGRESQL://b:two@h2:1/x or mysql://c:three@h3.";
        let out = redact(text);
        assert!(
            !out.contains("one@") && !out.contains("two@") && !out.contains("three"),
            "{out}"
        );
        assert!(out.contains("postgres://a:****@h1/db,"), "{out}");
        assert!(out.contains("POSTGRESQL://b:****@h2:1/x or"), "{out}");
    }
}
