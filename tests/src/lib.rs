//! Harness for the end-to-end tests: the workspace's services as real processes, a real
//! PostgreSQL cluster per test, and a small HTTP client.
//!
//! The services under test are discovered from the workspace (`cargo metadata`) and described
//! by the binaries themselves (`describe --json`), through the same library code as
//! `cargo xtask`, so a new service is covered without editing any test.

pub mod browser;
pub mod console;
pub mod http;
pub mod pg;
pub mod registry;
pub mod stack;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Where the service binaries are: `STELLA_BIN_DIR`, else those of the last image build for this
/// machine's architecture (`target/<arch>-unknown-linux-musl/release`), so the tests run the
/// static binaries the images ship. Nothing may replace them while tests run: the upgrade test
/// builds the previous release into `target/debug`, which no other test reads.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("STELLA_BIN_DIR") {
        return PathBuf::from(dir);
    }
    xtask::deploy::reference::bin_dir().expect("this machine's platform")
}

pub use xtask::workspace::ServiceInfo;

/// Where a described service's binary is, in [`bin_dir`].
pub trait BinPath {
    fn path(&self) -> PathBuf;
}

impl BinPath for ServiceInfo {
    fn path(&self) -> PathBuf {
        bin_path(&self.binary)
    }
}

pub fn bin_path(binary: &str) -> PathBuf {
    let path = bin_dir().join(binary);
    assert!(
        path.exists(),
        "{} is missing: build the images first (`cargo xtask images`; `cargo xtask test` does)",
        path.display()
    );
    path
}

/// Every service of the workspace, described by its own binary.
pub fn services() -> Vec<ServiceInfo> {
    xtask::workspace::services(&bin_dir()).expect("describing the workspace's services")
}

/// A free port, never handed out twice in this process. Why not port 0: the kernel gives ports
/// of its ephemeral range (32768 and up), which it also gives to every outgoing connection, and
/// can give a port just released to the next bind of a parallel test. These come from a block
/// below that range that this process holds alone: `cargo xtask test` runs several test
/// binaries at once, and each claims a block with an exclusive lock on a file, which the kernel
/// releases when the process ends (so a crashed run never keeps one). Each port is still
/// checked with a bind, for programs outside the tests.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const BLOCK: u16 = 200;
    const BLOCKS: u16 = 60;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    static CLAIMED: std::sync::OnceLock<(u16, std::fs::File)> = std::sync::OnceLock::new();
    let (block, _lock) = CLAIMED.get_or_init(|| {
        let dir = std::env::temp_dir().join("stella-e2e-ports");
        std::fs::create_dir_all(&dir).expect("a directory for the port locks");
        // Start at a block picked by process id, so concurrent binaries rarely try the same one.
        let first = (std::process::id() % u32::from(BLOCKS)) as u16;
        (0..BLOCKS)
            .map(|i| (first + i) % BLOCKS)
            .find_map(|b| {
                let file = std::fs::File::create(dir.join(format!("block-{b}.lock"))).ok()?;
                file.try_lock().ok().map(|()| (b, file))
            })
            .expect("all 60 port blocks are held by other test processes")
    });
    let base = 20_000 + block * BLOCK;
    for _ in 0..BLOCK {
        let port = base + NEXT.fetch_add(1, Ordering::SeqCst) % BLOCK;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 127.0.0.1:{base}..{}", base + BLOCK);
}

/// A port that refuses connections for as long as the returned socket lives: bound, never
/// listened on. A port from [`free_port`] is only free when it is handed out; a test that needs
/// a closed port (a probe that must fail, a sink that is down) must keep anyone else from
/// binding it meanwhile, or it may reach whatever did (one `images.rs` run saw "connection
/// reset" from a closed port). The kernel picks the port, and nobody else can bind it.
pub fn closed_port() -> (u16, socket2::Socket) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&any.into()).expect("binding 127.0.0.1:0");
    let port = socket.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.port()).expect("the bound port");
    (port, socket)
}

/// A child process whose stdout and stderr go to files, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    pub fn spawn(program: &Path, args: &[&str], env: &[(&str, String)]) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Proc { child, stdout, stderr, _dir: dir }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to our own child, whose pid we hold.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "sending signal {signal} to {}", self.pid());
    }

    /// Waits for exit up to `limit`; `None` if still running.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET that returns status and body whatever the status; `None` when nothing answered.
pub fn get(url: &str) -> Option<(u16, String)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut response = agent.get(url).call().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Some((status, body))
}

/// Polls `url` until it answers 200 or `limit` passes; returns the time it took.
pub fn wait_status(url: &str, want: u16, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if get(url).is_some_and(|(status, _)| status == want) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Runs a command to its end; panics naming the command when it cannot start.
pub fn output(cmd: &mut Command) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

/// Runs a command that must succeed and returns its standard output; on failure, panics with
/// the command and everything it printed.
pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies a directory tree (files and subdirectories), as `cp -r` would, keeping file modes.
/// A site's private CA and a server certificate for 127.0.0.1 signed by it, made with openssl in
/// `dir`: the paths of `ca.pem`, `server.pem` and `server.key`.
pub fn site_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sh = |script: &str| run(Command::new("sh").arg("-c").arg(script).current_dir(dir));
    sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=site-ca \
        -keyout ca.key -out ca.pem 2>/dev/null");
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null",
    );
    sh(
        "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf && \
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem 2>/dev/null",
    );
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display())) {
        let path = entry.expect("a directory entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap_or_else(|e| panic!("copying {}: {e}", path.display()));
        }
    }
}

/// The images Compose and the chart run: every built image but the tools (`kind = "tool"`,
/// the `stella` CLI), which are shipped but not deployed.
pub fn deployed(built: &xtask::assemble::Built) -> Vec<&xtask::assemble::BuiltImage> {
    let bins = xtask::workspace::package_binaries().expect("cargo metadata");
    let catalog = xtask::catalog::load(&root().join("images.toml"), &bins).expect("images.toml loads");
    built
        .images
        .iter()
        .filter(|i| catalog.images.get(&i.name).is_none_or(|c| c.kind != xtask::catalog::Kind::Tool))
        .collect()
}
