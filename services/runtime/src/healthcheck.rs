//! The `healthcheck` subcommand: asks this service's own readiness endpoint and exits 0 or 1,
//! so an image with no shell and no curl can still have a container HEALTHCHECK.
//!
//! A raw HTTP/1.0 request over a std socket is enough here and keeps the check free of the
//! async runtime: it must start and answer fast, every few seconds, for the life of the container.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Checks `http://<listen address>:<port>/health/readiness`; returns the status line on success.
pub fn check(listen: IpAddr, port: u16, timeout: Duration) -> Result<String, String> {
    // A wildcard bind answers on loopback; ask there.
    let host = match listen {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    let addr = SocketAddr::new(host, port);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health/readiness HTTP/1.0\r\nHost: localhost\r\nUser-Agent: stella-healthcheck\r\n\r\n")
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut response = String::new();
    stream.take(64 * 1024).read_to_string(&mut response).map_err(|e| format!("reading from {addr}: {e}"))?;
    let status_line = response.lines().next().unwrap_or_default().to_string();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.trim()).unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(format!("{status_line} {body}")),
        _ => Err(format!("{status_line} {body}")),
    }
}
