//! URLs as errors and logs may show them: never with credentials. Configured URLs are often
//! given with `user:password@`, a token in the query, or (webhooks) a token in the path.

/// `u` without `user:password@` and without its query string: for a URL whose path says what
/// was fetched (a feed document's locator, the model endpoint).
pub fn public_url(u: &str) -> String {
    let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if path.is_empty() { format!("{scheme}://{host}") } else { format!("{scheme}://{host}/{path}") }
}

/// `scheme://host[:port]` of a URL: what errors and logs may show of a notification sink.
/// Webhook URLs often carry their token in the path (`/services/T000/B000/XXXX`), so the path is
/// never shown.
pub fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_query_and_sink_paths_are_not_shown() {
        assert_eq!(public_url("https://u:p@h.example:8443/a/b.json?token=t#x"), "https://h.example:8443/a/b.json");
        assert_eq!(public_url("http://h"), "http://h");
        assert_eq!(origin("https://u:p@hooks.example:8443/services/T0/B0/t0ken?x=1"), "https://hooks.example:8443");
    }
}
