//! Registry authentication, as Docker and every registry client do it: a request answered 401
//! carries a `WWW-Authenticate` challenge; `Basic` is answered with the credentials, `Bearer`
//! by asking the challenge's realm (the token service) for a token for its service and scope,
//! with the credentials when there are some (anonymous otherwise). Tokens are kept per
//! repository and sent ahead on later requests.

use std::collections::BTreeMap;

use base64::Engine;

/// A user name and password (or token) for a registry.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ username: {:?}, password: <redacted> }}", self.username)
    }
}

impl Credentials {
    /// From `STELLA_REGISTRY_USERNAME` and `STELLA_REGISTRY_PASSWORD` (or
    /// `STELLA_REGISTRY_PASSWORD_FILE`); None when no user name is set.
    pub fn from_env() -> std::result::Result<Option<Credentials>, String> {
        let Ok(username) = std::env::var("STELLA_REGISTRY_USERNAME") else { return Ok(None) };
        let password =
            match (std::env::var("STELLA_REGISTRY_PASSWORD"), std::env::var("STELLA_REGISTRY_PASSWORD_FILE")) {
                (Ok(p), _) => p,
                (Err(_), Ok(file)) => std::fs::read_to_string(&file)
                    .map_err(|e| format!("STELLA_REGISTRY_PASSWORD_FILE={file}: {e}"))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                _ => return Err(
                    "STELLA_REGISTRY_USERNAME is set without STELLA_REGISTRY_PASSWORD or STELLA_REGISTRY_PASSWORD_FILE"
                        .into(),
                ),
            };
        Ok(Some(Credentials { username, password }))
    }

    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
    }
}

/// A parsed `WWW-Authenticate` challenge: the scheme and its parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull,push"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next()),
                    '"' => break,
                    c => v.push(c),
                }
            }
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_string()
        };
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    (!scheme.is_empty()).then(|| Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

/// `application/x-www-form-urlencoded` escaping of a query value.
pub fn escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed_with_quoted_commas() {
        let c = parse_challenge(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:stella/api:pull,push""#)
            .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:stella/api:pull,push");
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#).unwrap().params["realm"], "Registry Realm");
        assert_eq!(escape("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials { username: "ci".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.basic(), "Basic Y2k6aHVudGVyMg==");
    }
}
