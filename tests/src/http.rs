//! A small HTTP client for the API tests: any method, an optional bearer token and body, and
//! the status, headers and body back whatever the status.

use std::time::Duration;

/// What came back.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends one request; panics only when nothing answers. Redirects are answers too (the console's
/// `303 See Other` carries the session cookie), never followed.
pub fn call(method: &str, url: &str, token: Option<&str>, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Reply {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        // A net for a service that never answers, not a measure: a 20,000-component import in a
        // debug build, while other test binaries compile a release beside it, has taken over 30 s.
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(body.map(<[u8]>::to_vec).unwrap_or_default()).expect("a valid request");
    let mut response = agent.run(request).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = response.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap_or_default();
    Reply { status, body, headers }
}
