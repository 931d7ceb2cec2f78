//! `stella-nats`: NATS with JetStream, its store on `/data` (the image's volume), the client
//! port and the monitoring port from the environment; `healthcheck` asks the monitoring
//! endpoint `/healthz`, which also reports JetStream's health.

use std::process::Command;

use crate::{Failure, connect, exchange, exec, port, var};

pub const SERVER: &str = "/usr/sbin/nats-server";

pub fn main(args: &[String]) -> Result<(), Failure> {
    let client = port("NATS_PORT", 4222)?;
    let monitor = port("NATS_MONITOR_PORT", 8222)?;
    if args.first().map(String::as_str) == Some("healthcheck") {
        return healthcheck(monitor);
    }
    let mut cmd = Command::new(SERVER);
    cmd.args(["--jetstream", "--store_dir", &var("NATS_DATA_DIR", "/data")])
        .args(["--port", &client.to_string(), "--http_port", &monitor.to_string()])
        .args(args);
    Err(exec(&mut cmd))
}

/// `GET /healthz` on the monitoring port; healthy on status 200.
pub fn healthcheck(port: u16) -> Result<(), Failure> {
    let mut stream = connect(port)?;
    let request = format!("GET /healthz HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let reply = exchange(&mut stream, request.as_bytes(), |_| false)?;
    let text = String::from_utf8_lossy(&reply);
    let status = text.lines().next().unwrap_or_default();
    if status_code(status) == Some(200) {
        Ok(())
    } else {
        Err(Failure::other(format!("nats monitoring on port {port} answered {:?}", text.trim())))
    }
}

/// The status code of an HTTP status line.
pub fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines() {
        assert_eq!(super::status_code("HTTP/1.0 200 OK"), Some(200));
        assert_eq!(super::status_code("HTTP/1.1 503 Service Unavailable"), Some(503));
        assert_eq!(super::status_code("garbage"), None);
    }
}
