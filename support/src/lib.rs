//! The support images' own code: a small static entrypoint per image that turns the
//! environment (and `*_FILE` secrets) into the server's configuration and then `exec`s the
//! server, and a `healthcheck` mode that speaks the server's protocol, so the images need no
//! shell and no client tools at run time.
//!
//! Every binary has the same contract as the StellaOps services: `healthcheck` exits 0 when the
//! server answers and 1 otherwise; a configuration error exits 78 (`EX_CONFIG`) with one line
//! naming the variable and what is accepted; log lines are JSON on standard error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

pub mod backup;
pub mod nats;
pub mod postgres;
pub mod redis;

/// Exit code of a configuration error, as for the services (`EX_CONFIG`).
pub const EX_CONFIG: i32 = 78;

/// Why an entrypoint stopped.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn config(message: impl Into<String>) -> Failure {
        Failure { code: EX_CONFIG, message: message.into() }
    }
    pub fn other(message: impl Into<String>) -> Failure {
        Failure { code: 1, message: message.into() }
    }
}

/// Runs an entrypoint's `main` with the process arguments and exits with its outcome.
pub fn run(main: fn(&[String]) -> Result<(), Failure>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(failure) = main(&args) {
        log("ERROR", &failure.message);
        std::process::exit(failure.code);
    }
}

/// One JSON log line on standard error, in the services' shape.
pub fn log(level: &str, message: &str) {
    let target = std::env::args().next().and_then(|a| a.rsplit('/').next().map(str::to_string)).unwrap_or_default();
    let line = serde_json::json!({ "level": level, "target": target, "fields": { "message": message } });
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A variable's value, or `default`.
pub fn var(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// A TCP port from a variable.
pub fn port(name: &str, default: u16) -> Result<u16, Failure> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
            Failure::config(format!("{name}={v:?} is not a TCP port: set it to a number from 1 to 65535"))
        }),
    }
}

/// A secret read from the file named by `<name>_FILE` (first line, without the line ending);
/// `None` when the variable is not set. Secrets are never taken from the environment itself,
/// where `docker inspect` and `/proc` would show them.
pub fn secret(name: &str) -> Result<Option<String>, Failure> {
    let file_var = format!("{name}_FILE");
    if std::env::var_os(name).is_some() {
        return Err(Failure::config(format!(
            "{name} is set in the environment: put the secret in a file and set {file_var} to its path instead"
        )));
    }
    let Some(path) = std::env::var_os(&file_var) else { return Ok(None) };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Failure::config(format!("{file_var}={}: cannot read the secret file: {e}", path.display())))?;
    let first = text.lines().next().unwrap_or_default().to_string();
    if first.is_empty() {
        return Err(Failure::config(format!("{file_var}={}: the secret file is empty", path.display())));
    }
    Ok(Some(first))
}

/// Replaces this process with `cmd`; returns only if that fails.
pub fn exec(cmd: &mut Command) -> Failure {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let error = cmd.exec();
    Failure::other(format!("cannot start {program}: {error}"))
}

/// Runs `cmd` to completion, failing with its name and exit status.
pub fn run_step(cmd: &mut Command) -> Result<(), Failure> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let status = cmd.status().map_err(|e| Failure::other(format!("cannot start {program}: {e}")))?;
    if !status.success() {
        return Err(Failure::other(format!("{program} failed ({status})")));
    }
    Ok(())
}

/// Opens a TCP connection to the server on this host with short timeouts (a healthcheck must
/// answer well within Docker's interval).
pub fn connect(port: u16) -> Result<TcpStream, Failure> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| Failure::other(format!("{addr}: {e}")))?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| Failure::other(e.to_string()))?;
    stream.set_write_timeout(Some(Duration::from_secs(3))).map_err(|e| Failure::other(e.to_string()))?;
    Ok(stream)
}

/// Sends `request` and reads until `done` says the reply is complete or the peer closes.
pub fn exchange(stream: &mut TcpStream, request: &[u8], done: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, Failure> {
    stream.write_all(request).map_err(|e| Failure::other(format!("sending: {e}")))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&reply) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) => return Err(Failure::other(format!("reading the reply: {e}"))),
        }
    }
    Ok(reply)
}
