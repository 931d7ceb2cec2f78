//! The advisory AI assistant (stella-ai), off unless a model endpoint is configured: it answers
//! a question about one advisory linkset by asking an OpenAI-compatible chat completions API.
//!
//! Guardrails, by construction rather than by filtering answers: the prompt holds only the
//! linkset's advisory facts (global data, the same for every tenant: no scan, finding or other
//! tenant's row is ever read here) and the question, from which anything shaped like a secret
//! (StellaOps tokens, bearer tokens, `password=`-style pairs, private keys) is removed first. The
//! prompt and the completion are bounded by configuration; the API key is a secret setting and is
//! sent only to the configured endpoint.

use std::time::Duration;

use serde_json::{Value, json};
use stella_runtime::config::{Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use stella_runtime::sqlx::PgPool;
use stella_runtime::tokio;

use crate::Error;
use crate::aggregation::{self, Kind};
use crate::http::{self, Redirects};

pub const ENDPOINT: Setting = s(
    "STELLA_AI_ENDPOINT",
    SettingKind::Url { schemes: &["http", "https"] },
    Fallback::None,
    "Base URL of an OpenAI-compatible API (…/v1); unset: the assistant is off and answers 503.",
);

pub const API_KEY: Setting = s(
    "STELLA_AI_API_KEY",
    SettingKind::Text,
    Fallback::None,
    "Bearer key for the model endpoint, if it needs one. Prefer STELLA_AI_API_KEY_FILE.",
)
.secret();

pub const MODEL: Setting =
    s("STELLA_AI_MODEL", SettingKind::Text, Fallback::Value("default"), "Model name sent to the endpoint.");

pub const MAX_TOKENS: Setting = s(
    "STELLA_AI_MAX_TOKENS",
    SettingKind::Count { min: 16, max: 32768 },
    Fallback::Value("512"),
    "Most tokens an answer may have (the completion's max_tokens).",
);

pub const MAX_PROMPT: Setting = s(
    "STELLA_AI_MAX_PROMPT_CHARS",
    SettingKind::Count { min: 256, max: 1_000_000 },
    Fallback::Value("16000"),
    "Longest prompt sent, in characters; a larger linkset is refused with 422 rather than cut.",
);

/// The assistant's configuration; `endpoint: None` means off.
#[derive(Clone)]
pub struct Assistant {
    pub endpoint: Option<String>,
    pub api_key: Option<String>,
    pub model: String,
    pub max_tokens: u64,
    pub max_prompt: usize,
}

impl Assistant {
    pub fn new(ctx: &stella_runtime::Context) -> Assistant {
        let c = &ctx.config;
        Assistant {
            endpoint: c.text(ENDPOINT.name).map(|e| e.trim_end_matches('/').to_string()),
            api_key: c.text(API_KEY.name).map(str::to_string),
            model: c.text(MODEL.name).unwrap_or("default").to_string(),
            max_tokens: c.int(MAX_TOKENS.name).unwrap_or(512),
            max_prompt: c.int(MAX_PROMPT.name).unwrap_or(16000) as usize,
        }
    }

    pub fn status(&self) -> Value {
        json!({"enabled": self.endpoint.is_some(), "model": self.endpoint.as_ref().map(|_| &self.model),
               "maxTokens": self.max_tokens})
    }

    /// Answers `question` about the advisory linkset `key`.
    pub async fn ask(&self, db: &PgPool, key: &str, question: &str) -> Result<Value, Error> {
        let Some(endpoint) = &self.endpoint else { return Err(off()) };
        let question = question.trim();
        if question.is_empty() || question.chars().count() > 2000 {
            return Err(Error::bad("question", "ask something of 1 to 2000 characters"));
        }
        let linkset = aggregation::linkset(db, Kind::Advisory, key).await?;
        let (question, redacted) = scrub(question);
        let facts = serde_json::to_string(&facts(&linkset)).map_err(|e| Error::Internal(e.to_string()))?;
        let system = "You are the StellaOps advisory assistant. Answer only from the advisory facts given. \
                      The facts come from separate sources and are not merged: when sources disagree, say so and name them. \
                      If the facts do not answer the question, say that they do not.";
        let user = format!("Advisory linkset {key}, facts from each source:\n{facts}\n\nQuestion: {question}");
        if system.len() + user.len() > self.max_prompt {
            return Err(Error::bad(
                "linkset",
                format!(
                    "{key} needs a prompt of {} characters, more than STELLA_AI_MAX_PROMPT_CHARS ({})",
                    system.len() + user.len(),
                    self.max_prompt
                ),
            ));
        }
        let request = json!({
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        });
        let reply = self.complete(endpoint, &request).await?;
        let answer = reply["choices"][0]["message"]["content"].as_str().ok_or_else(|| {
            Error::Unavailable("the model endpoint's answer has no choices[0].message.content".into())
        })?;
        Ok(json!({"linkset": key, "answer": answer, "model": reply.get("model").unwrap_or(&json!(self.model)),
                  "usage": reply.get("usage"), "redacted": redacted}))
    }

    async fn complete(&self, endpoint: &str, request: &Value) -> Result<Value, Error> {
        let url = format!("{endpoint}/chat/completions");
        let (key, body) = (self.api_key.clone(), request.to_string());
        tokio::task::spawn_blocking(move || {
            let agent = http::agent(Duration::from_secs(120), Redirects::Refused);
            let mut req = agent.post(&url).header("content-type", "application/json");
            if let Some(k) = &key {
                req = req.header("authorization", &format!("Bearer {k}"));
            }
            let shown = crate::urls::public_url(&url);
            let mut reply = req
                .send(body.as_bytes())
                .map_err(|e| Error::Unavailable(format!("the model endpoint {shown} did not answer: {e}")))?;
            let status = reply.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(Error::Unavailable(format!("the model endpoint {shown} answered {status}")));
            }
            let text = reply
                .body_mut()
                .read_to_string()
                .map_err(|e| Error::Unavailable(format!("the model endpoint {shown}: {e}")))?;
            serde_json::from_str::<Value>(&text)
                .map_err(|e| Error::Unavailable(format!("the model endpoint {shown} sent no JSON: {e}")))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
    }
}

/// The answer of every question while the assistant is off.
pub fn off() -> Error {
    Error::Unavailable(
        "the advisory AI assistant is off: set STELLA_AI_ENDPOINT to an OpenAI-compatible API to turn it on".into(),
    )
}

/// The parts of a linkset the model sees: per original, its source and what its advisory
/// says (the document number is kept so an answer can cite it).
fn facts(linkset: &Value) -> Value {
    let links = linkset["links"].as_array().cloned().unwrap_or_default();
    Value::Array(
        links.iter().map(|l| json!({"source": l["source"], "document": l["id"], "advisory": l["advisory"]})).collect(),
    )
}

/// The question without anything shaped like a secret, and how many were removed. Words are
/// split at any white space and judged without the punctuation around them, so `(stella_...)`
/// or a token on its own line is caught; the question's white space is normalized to spaces.
pub fn scrub(text: &str) -> (String, usize) {
    let mut redacted = 0;
    let mut words: Vec<String> = Vec::new();
    let mut in_key = false;
    let mut after_bearer = false;
    for word in text.split_whitespace() {
        let bare = word.trim_matches(|c: char| "()[]{}<>\"'`,;:".contains(c));
        let lower = bare.to_ascii_lowercase();
        let secretish = bare.starts_with("stella_") && bare.len() > 20
            || lower.starts_with("eyj") && bare.len() > 30
            || ["password=", "passwd=", "secret=", "token=", "apikey=", "api_key=", "pwd=", "password:", "secret:"]
                .iter()
                .any(|p| lower.contains(p))
            || (after_bearer && bare.len() > 8);
        if word.contains("-----BEGIN") {
            in_key = true;
        }
        if in_key || secretish {
            redacted += 1;
            if words.last().map(String::as_str) != Some("[redacted]") {
                words.push("[redacted]".into());
            }
        } else {
            words.push(word.to_string());
        }
        if word.contains("-----END") {
            in_key = false;
        }
        after_bearer = lower == "bearer";
    }
    (words.join(" "), redacted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_removed_from_questions() {
        let (q, n) = scrub("is stella_AbCdEfGhIjKlMnOpQrStUvWxYz0123 affected? password=hunter2 Bearer abcdefghijkl");
        assert_eq!(n, 3, "{q}");
        assert!(!q.contains("stella_AbC") && !q.contains("hunter2") && !q.contains("abcdefghijkl"), "{q}");
        assert_eq!(scrub("which versions are fixed?"), ("which versions are fixed?".into(), 0));
        let (q, n) = scrub(
            "token:\nstella_AbCdEfGhIjKlMnOpQrStUvWxYz0123 (stella_ZyXwVuTsRqPoNmLkJiHg9876) Bearer\tabcdefghijkl",
        );
        assert_eq!(n, 3, "{q}");
        assert!(!q.contains("stella_") && !q.contains("abcdefghijkl"), "{q}");
    }
}
