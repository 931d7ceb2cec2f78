//! `stella-redis`: writes Redis's configuration to its standard input (`redis-server -`), so
//! the password from `REDIS_PASSWORD_FILE` never appears in argv, the environment or a file,
//! then `exec`s the server. Data (the append-only file) goes to `/data`, the image's volume.

use std::io::Write;
use std::process::Command;

use crate::{Failure, connect, exchange, exec, port, secret, var};

pub const SERVER: &str = "/usr/bin/redis-server";

pub fn main(args: &[String]) -> Result<(), Failure> {
    let port = port("REDIS_PORT", 6379)?;
    let password = secret("REDIS_PASSWORD")?;
    if args.first().map(String::as_str) == Some("healthcheck") {
        return healthcheck(port, password.as_deref());
    }
    let config = config(port, &var("REDIS_DATA_DIR", "/data"), password.as_deref());
    let (reader, mut writer) = std::io::pipe().map_err(|e| Failure::other(format!("creating a pipe: {e}")))?;
    // The configuration is far smaller than a pipe's buffer, so it is written before the exec.
    writer.write_all(config.as_bytes()).map_err(|e| Failure::other(format!("writing the configuration: {e}")))?;
    drop(writer);
    let mut cmd = Command::new(SERVER);
    cmd.arg("-").args(args).stdin(reader);
    Err(exec(&mut cmd))
}

/// The configuration: every interface, append-only persistence, logs to standard output.
/// Without a password Redis keeps its protected mode (loopback clients only).
pub fn config(port: u16, dir: &str, password: Option<&str>) -> String {
    let mut c = format!("bind * -::*\nport {port}\ndir {}\nappendonly yes\ndaemonize no\nlogfile \"\"\n", quote(dir));
    match password {
        Some(p) => c.push_str(&format!("protected-mode no\nrequirepass {}\n", quote(p))),
        None => c.push_str("protected-mode yes\n"),
    }
    c
}

/// A double-quoted Redis configuration string.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A RESP array of bulk strings.
pub fn command(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend(format!("${}\r\n", p.len()).into_bytes());
        out.extend(p.as_bytes());
        out.extend(b"\r\n");
    }
    out
}

/// `AUTH` when there is a password, then `PING`; healthy on `+PONG`.
pub fn healthcheck(port: u16, password: Option<&str>) -> Result<(), Failure> {
    let mut stream = connect(port)?;
    let mut request = Vec::new();
    let mut replies = 1;
    if let Some(p) = password {
        request.extend(command(&["AUTH", p]));
        replies += 1;
    }
    request.extend(command(&["PING"]));
    let reply = exchange(&mut stream, &request, |r| r.windows(2).filter(|w| w == b"\r\n").count() >= replies)?;
    let text = String::from_utf8_lossy(&reply);
    if text.lines().last() == Some("+PONG") {
        Ok(())
    } else {
        Err(Failure::other(format!("redis on port {port} answered {:?}", text.trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_quoted_and_protected_mode_follows_them() {
        let c = config(6379, "/data", Some("a \"b\" \\c"));
        assert!(c.contains("requirepass \"a \\\"b\\\" \\\\c\"\n"), "{c}");
        assert!(c.contains("protected-mode no"));
        assert!(config(6379, "/data", None).contains("protected-mode yes"));
    }

    #[test]
    fn commands_are_resp_arrays() {
        assert_eq!(command(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(command(&["AUTH", "pw"]), b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n");
    }
}
