//! The HTTP calls: a bearer token on every request, the API's JSON error shown as its message
//! with the status, and no redirects followed (a token is never sent to another host).

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

pub struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(base: &str, token: Option<String>) -> Api {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Api { base: base.trim_end_matches('/').to_string(), token, agent }
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let request = self.agent.get(format!("{}{path}", self.base));
        let request = match &self.token {
            Some(t) => request.header("authorization", format!("Bearer {t}")),
            None => request,
        };
        json(path, request.call())
    }

    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let request = self.agent.get(format!("{}{path}", self.base));
        let request = match &self.token {
            Some(t) => request.header("authorization", format!("Bearer {t}")),
            None => request,
        };
        let mut response = request.call().with_context(|| format!("GET {}{path}", self.base))?;
        let status = response.status().as_u16();
        let bytes = response.body_mut().with_config().limit(1 << 30).read_to_vec()?;
        if !(200..300).contains(&status) {
            bail!("GET {path}: HTTP {status}: {}", message(&bytes));
        }
        Ok(bytes)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.post_bytes(path, serde_json::to_vec(body)?)
    }

    pub fn post_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let request = self.agent.post(format!("{}{path}", self.base)).header("content-type", "application/json");
        let request = match &self.token {
            Some(t) => request.header("authorization", format!("Bearer {t}")),
            None => request,
        };
        json(path, request.send(body.as_slice()))
    }
}

fn json(path: &str, response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> anyhow::Result<Value> {
    let mut response = response.with_context(|| format!("{path}: the service did not answer"))?;
    let status = response.status().as_u16();
    let bytes = response.body_mut().with_config().limit(64 << 20).read_to_vec()?;
    if status == 401 {
        bail!(
            "{path}: HTTP 401: {} (give a token with --token or STELLA_TOKEN; `stella login` prints one)",
            message(&bytes)
        );
    }
    if !(200..300).contains(&status) {
        bail!("{path}: HTTP {status}: {}", message(&bytes));
    }
    serde_json::from_slice(&bytes).with_context(|| format!("{path}: the answer is not JSON"))
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
    // An IPv6 literal keeps its brackets; otherwise the host is what precedes the port.
    let host = match authority.find(']') {
        Some(end) if authority.starts_with('[') => &authority[..=end],
        _ => authority.split(':').next().unwrap_or(authority),
    };
    format!("{scheme}://{host}:{port}")
}

/// Percent-encodes a query or path value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn another_port_on_the_same_host() {
        assert_eq!(super::with_port("http://localhost:8081", 8088), "http://localhost:8088");
        assert_eq!(super::with_port("https://api.example.com/", 8083), "https://api.example.com:8083");
        assert_eq!(super::with_port("http://[::1]:8081/x", 8088), "http://[::1]:8088");
        assert_eq!(super::with_port("http://[::1]", 8088), "http://[::1]:8088");
    }
}
