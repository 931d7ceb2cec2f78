//! Secret redaction: every configured secret value is replaced in every line before it is written.
//!
//! Redacting at the writer, not at each call site, means a secret that reaches a log line by an
//! unexpected route (a driver error echoing a URL, a debug dump) is still never written.

use std::io::{self, Write};
use std::sync::OnceLock;

/// What a secret is replaced with, in logs, errors and `/config`.
pub const MARK: &str = "<redacted>";

static SECRETS: OnceLock<Vec<String>> = OnceLock::new();

/// Registers the secrets to redact; called once, after configuration is loaded.
pub fn install(mut secrets: Vec<String>) {
    // Longest first, so a URL is replaced whole before its password alone would be.
    secrets.retain(|s| s.len() >= 3);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let _ = SECRETS.set(secrets);
}

/// `text` with every registered secret replaced by [`MARK`].
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for secret in SECRETS.get().map(Vec::as_slice).unwrap_or_default() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MARK);
        }
    }
    out
}

/// A stdout writer that redacts each formatted log line.
pub struct RedactingStdout;

impl Write for RedactingStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = redact(&String::from_utf8_lossy(buf));
        io::stdout().lock().write_all(line.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_longest_secret_first() {
        super::install(vec!["pw9".into(), "postgres://u:pw9@h/db".into()]);
        assert_eq!(super::redact("connect postgres://u:pw9@h/db failed"), "connect <redacted> failed");
        assert_eq!(super::redact("password pw9"), "password <redacted>");
    }
}
