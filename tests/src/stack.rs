//! A StellaOps stack for the end-to-end tests: a real PostgreSQL with the schema (and the seed),
//! the service binaries started on it as processes, and loopback listeners standing in for the
//! outside world (a mirror, a webhook).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::{Reply, call};
use crate::pg::Postgres;
use crate::{Proc, bin_path, free_port, wait_status};

pub const PASSWORD: &str = "quickstart-admin-password";

/// A database with the schema (and with `seed`, the seed), and the services started on it.
pub struct Stack {
    pub pg: Postgres,
    pub services: BTreeMap<&'static str, (Proc, u16)>,
}

impl Stack {
    pub fn new(seed_env: Option<&[(&str, String)]>) -> Stack {
        let pg = Postgres::start();
        let stack = Stack { pg, services: BTreeMap::new() };
        let (code, log) = stack.migrate(seed_env);
        assert_eq!(code, 0, "migrator: {log}");
        stack
    }

    /// Runs the migrator (`--seed` when `seed_env` is given) and returns its exit code and output.
    pub fn migrate(&self, seed_env: Option<&[(&str, String)]>) -> (i32, String) {
        let args: &[&str] = if seed_env.is_some() { &["--seed"] } else { &[] };
        self.pg.migrate(args, seed_env.unwrap_or_default())
    }

    pub fn start(&mut self, service: &'static str, extra: &[(&str, String)]) {
        self.start_at(service, free_port(), extra);
    }

    /// Starts a service on a given port (the console finds the others by a URL template).
    pub fn start_at(&mut self, service: &'static str, port: u16, extra: &[(&str, String)]) {
        let mut env = vec![
            ("STELLA_PORT", port.to_string()),
            ("STELLA_LISTEN_ADDR", "127.0.0.1".to_string()),
            ("STELLA_DATABASE_URL", self.pg.url()),
        ];
        env.extend(extra.iter().cloned());
        let proc = Proc::spawn(&bin_path(&format!("stella-{service}")), &[], &env);
        let ready = format!("http://127.0.0.1:{port}/health/readiness");
        assert!(
            wait_status(&ready, 200, Duration::from_secs(20)).is_some(),
            "stella-{service} never ready: {}",
            proc.stdout()
        );
        self.services.insert(service, (proc, port));
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.services[service].1)
    }

    pub fn get(&self, service: &str, path: &str, token: &str) -> Reply {
        call("GET", &self.url(service, path), Some(token), None, &[])
    }

    pub fn log(&self, service: &str) -> String {
        self.services[service].0.stdout()
    }

    pub fn login(&self, tenant: &str, user: &str, password: &str) -> Reply {
        let body = serde_json::json!({"tenant": tenant, "username": user, "password": password}).to_string();
        call("POST", &self.url("api", "/api/v1/auth/login"), None, Some(body.as_bytes()), &[])
    }

    pub fn admin_token(&self) -> String {
        let r = self.login("default", "admin", PASSWORD);
        assert_eq!(r.status, 201, "login: {}", r.text());
        r.json()["token"].as_str().unwrap().to_string()
    }
}

pub fn admin_only() -> Vec<(&'static str, String)> {
    vec![("STELLA_ADMIN_PASSWORD", PASSWORD.to_string())]
}

pub fn quickstart() -> Vec<(&'static str, String)> {
    vec![("STELLA_ADMIN_PASSWORD", PASSWORD.to_string()), ("STELLA_QUICKSTART_MODE", "true".to_string())]
}

pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A loopback HTTP listener standing in for a mirror or a webhook: it answers every request
/// with `200 OK` (or the given reply), counts the connections and keeps each request's body.
pub struct Listener {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    pub fn start() -> Listener {
        Listener::replying("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into())
    }

    /// A listener that answers every request with `200 OK` and this JSON body.
    pub fn json(body: &str) -> Listener {
        Listener::replying(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    }

    /// A listener that sends `reply` (a whole HTTP response) to every request.
    pub fn replying(reply: String) -> Listener {
        Listener::replying_on("127.0.0.1", reply)
    }

    /// The same, on another loopback address (`127.0.0.2`): what an egress policy tells apart.
    pub fn replying_on(ip: &str, reply: String) -> Listener {
        let socket = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = socket.local_addr().unwrap().port();
        let (accepted, bodies) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (count, kept) = (accepted.clone(), bodies.clone());
        std::thread::spawn(move || {
            for stream in socket.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                if let Some(body) = read_request(&mut stream) {
                    kept.lock().unwrap().push(body);
                }
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Listener { port, accepted, bodies }
    }

    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The bodies of the requests received so far.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Reads one request's head and its `Content-Length` body.
fn read_request(stream: &mut std::net::TcpStream) -> Option<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while data.len() < end + 4 + length {
            let n = stream.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        return Some(String::from_utf8_lossy(&data[end + 4..]).into_owned());
    }
}
