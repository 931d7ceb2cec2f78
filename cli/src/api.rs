//! The HTTP calls: a bearer token on every request, the API's JSON error shown as its message
//! with the status, and no redirects followed (a token is never sent to another host).

use std::time::Duration;

use anyhow::{Context as _, bail};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use ureq::Body;
use ureq::http::Response;

/// The password login: a 401 there is a wrong password, not a missing token.
pub const LOGIN: &str = "/api/v1/auth/login";

pub struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        let agent = ureq::Agent::config_builder()
            // No limit on the whole call: an export download or a large SBOM may take longer
            // than any fixed figure. A host that does not answer, or stalls, still fails.
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .timeout_send_body(Some(Duration::from_secs(600)))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Api { base: base.trim_end_matches('/').to_string(), token, agent }
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json(path, self.send("GET", path, Vec::new()))
    }

    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let mut response = self.send("GET", path, Vec::new()).with_context(|| format!("GET {}{path}", self.base))?;
        let status = response.status().as_u16();
        let bytes = response.body_mut().with_config().limit(1 << 30).read_to_vec()?;
        if !(200..300).contains(&status) {
            bail!("{}{path}: HTTP {status}: {}", self.base, message(&bytes));
        }
        Ok(bytes)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.post_bytes(path, serde_json::to_vec(body)?)
    }

    pub fn post_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        self.json(path, self.send("POST", path, body))
    }

    /// A JSON answer; an error names the service's URL, the path and the API's message.
    fn json(&self, path: &str, response: Result<Response<Body>, ureq::Error>) -> anyhow::Result<Value> {
        let base = &self.base;
        let mut response = response.with_context(|| format!("{base}{path}: the service did not answer"))?;
        let status = response.status().as_u16();
        let bytes = response.body_mut().with_config().limit(64 << 20).read_to_vec()?;
        // A refused token gets a hint; a refused password (the login itself) does not.
        if status == 401 && path != LOGIN {
            bail!(
                "{base}{path}: HTTP 401: {} (give a token with --token or STELLA_TOKEN; `stella login` prints one)",
                message(&bytes)
            );
        }
        if !(200..300).contains(&status) {
            bail!("{base}{path}: HTTP {status}: {}", message(&bytes));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{base}{path}: the answer is not JSON"))
    }

    /// Every request goes out here: the one place that adds the bearer token.
    fn send(&self, method: &str, path: &str, body: Vec<u8>) -> Result<Response<Body>, ureq::Error> {
        let mut request = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if method == "POST" {
            request = request.header("content-type", "application/json");
        }
        if let Some(t) = &self.token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        self.agent.run(request.body(body)?)
    }
}

/// The API's `{"message": ...}`, or the start of whatever came back.
fn message(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned())
}

/// `http://host:8081/x` with another port: `http://host:8088`.
pub fn with_port(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    // `user:password@host`: the host is after the last `@` (a user name is not a host).
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    // An IPv6 literal keeps its brackets; otherwise the host is what precedes the port.
    let host = match authority.find(']') {
        Some(end) if authority.starts_with('[') => &authority[..=end],
        _ => authority.split(':').next().unwrap_or(authority),
    };
    format!("{scheme}://{host}:{port}")
}

/// RFC 3986's unreserved characters stay as they are; everything else is percent-encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes a query or path value.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_percent_encoded_but_unreserved_characters_stay() {
        assert_eq!(super::encode("GHSA-ab_c.1~x"), "GHSA-ab_c.1~x");
        assert_eq!(super::encode("a b/c+d&é"), "a%20b%2Fc%2Bd%26%C3%A9");
    }

    #[test]
    fn another_port_on_the_same_host() {
        assert_eq!(super::with_port("http://localhost:8081", 8088), "http://localhost:8088");
        assert_eq!(super::with_port("https://api.example.com/", 8083), "https://api.example.com:8083");
        assert_eq!(super::with_port("http://[::1]:8081/x", 8088), "http://[::1]:8088");
        assert_eq!(super::with_port("https://alice:pw@api.example.com:8081", 8088), "https://api.example.com:8088");
        assert_eq!(super::with_port("http://[::1]", 8088), "http://[::1]:8088");
    }
}
