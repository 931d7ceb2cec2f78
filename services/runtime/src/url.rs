//! URLs inside settings, as they may be shown: operators put credentials in URLs
//! (`https://user:password@collector:4318`, `?token=...`, S3 signatures) also in settings that
//! are not marked secret, so every URL-shaped value is cleaned where a setting is shown
//! (`/config`, the configuration log line), and its credentials join the log redactor's list.
//!
//! The URL is read by `http::Uri` (the parser the services' HTTP stack uses); a value that looks
//! like a URL but does not parse is shown as `<redacted>` when it has a `@` or a `?`, since what
//! it would carry cannot be told.

use std::borrow::Cow;

use axum::http::Uri;

use crate::redact::MARK;

/// Query parameter names whose value is a credential (compared in lower case, as substrings):
/// `token`, `access_token`, `api_key`, `X-Amz-Signature`, `X-Amz-Credential`, `sig`, ...
const SECRET_PARAMS: &[&str] = &["token", "secret", "passw", "pwd", "key", "sig", "credential", "auth", "session"];

fn secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

/// `text` with the userinfo of a URL and the values of its secret-looking query parameters
/// replaced by `<redacted>`; any other text unchanged.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let Ok(uri) = text.parse::<Uri>() else {
        return if text.contains(['@', '?']) { Cow::Borrowed(MARK) } else { Cow::Borrowed(text) };
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Cow::Borrowed(text);
    };
    let secret_query =
        uri.query().is_some_and(|q| q.split('&').any(|p| secret_param(p.split('=').next().unwrap_or(p))));
    if !authority.as_str().contains('@') && !secret_query {
        return Cow::Borrowed(text);
    }
    let host = authority.as_str().rsplit_once('@').map_or(authority.as_str(), |(_, h)| h);
    let userinfo = if authority.as_str().contains('@') { format!("{MARK}@") } else { String::new() };
    let mut out = format!("{scheme}://{userinfo}{host}{}", uri.path());
    if let Some(query) = uri.query() {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if secret_param(name) => format!("{name}={MARK}"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{out}?{}", pairs.join("&"));
    }
    // `http::Uri` keeps an empty path as `/`; show what was given.
    if !text[scheme.len() + 3..].contains('/') && out.ends_with(&format!("{host}/")) {
        out.pop();
    }
    Cow::Owned(out)
}

/// The credentials inside a URL value: its password, and the values of its secret-looking query
/// parameters (for the log redactor).
pub fn credentials(text: &str) -> Vec<String> {
    if !text.contains("://") {
        return vec![];
    }
    let Ok(uri) = text.parse::<Uri>() else { return vec![] };
    let mut out = Vec::new();
    if let Some(authority) = uri.authority()
        && let Some((userinfo, _)) = authority.as_str().rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
        && !password.is_empty()
    {
        out.push(password.to_string());
    }
    for pair in uri.query().unwrap_or_default().split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && secret_param(name)
            && !value.is_empty()
        {
            out.push(value.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_secret_parameters_are_hidden_and_the_rest_kept() {
        assert_eq!(shown("http://user:pw@collector:4318/v1/traces"), "http://<redacted>@collector:4318/v1/traces");
        assert_eq!(shown("http://token@collector:4318"), "http://<redacted>@collector:4318");
        assert_eq!(
            shown("https://s3.example/b/o?X-Amz-Credential=AKIA&X-Amz-Signature=abc&region=eu&api_key=k"),
            "https://s3.example/b/o?X-Amz-Credential=<redacted>&X-Amz-Signature=<redacted>&region=eu&api_key=<redacted>"
        );
        assert_eq!(shown("http://collector:4318?service=stella"), "http://collector:4318?service=stella");
        assert_eq!(shown("file:///var/lib/stella/objects"), "file:///var/lib/stella/objects");
        assert_eq!(shown("not a url"), "not a url");
        assert_eq!(shown("http://us er:p w@h/"), MARK, "unparsable with userinfo");
        assert_eq!(credentials("http://user:pw@h:1/x?token=t0k&a=b"), vec!["pw".to_string(), "t0k".to_string()]);
        assert!(credentials("http://h/x").is_empty());
    }
}
