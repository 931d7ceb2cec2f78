//! Every service, run as PID 1 of its own PID namespace (as in a container without an init),
//! reaps the orphans the kernel hands it, so no zombie is left behind.
//!
//! The orphan is made the way it happens in containers: a process entering the namespace
//! (`nsenter`, like `docker exec`) starts a child and exits; the child is re-parented to PID 1,
//! exits in turn, and stays a zombie unless PID 1 waits for it.

use std::process::Command;
use std::time::Duration;

use stella_e2e::{BinPath, Proc, free_port, services, wait_status};

/// The host PID of the first child of `pid`.
fn child_of(pid: i32) -> Option<i32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// Zombie processes whose parent is `pid`.
fn zombies_of(pid: i32) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
        if field("State:").contains('Z') && field("PPid:").split_whitespace().nth(1) == Some(&pid.to_string()) {
            out.push(format!("{} {}", entry.file_name().to_string_lossy(), field("Name:")));
        }
    }
    out
}

#[test]
fn every_server_reaps_orphans_as_pid_1() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "PID namespaces need root; CI and `cargo xtask test` run as root");
    for s in services().into_iter().filter(|s| s.kind == "server") {
        let port = free_port();
        let unshare = Proc::spawn(
            std::path::Path::new("/usr/bin/unshare"),
            &["--pid", "--fork", "--kill-child", s.path().to_str().unwrap()],
            &[("STELLA_PORT", port.to_string()), ("STELLA_LISTEN_ADDR", "127.0.0.1".into())],
        );
        assert!(
            wait_status(&format!("http://127.0.0.1:{port}/health/liveness"), 200, Duration::from_secs(10)).is_some(),
            "{} did not start as PID 1: {}",
            s.binary,
            unshare.stderr()
        );
        let pid = child_of(unshare.pid()).expect("unshare's child is the service");
        let ns_pid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .map(|l| l.split_whitespace().last().unwrap().to_string());
        assert_eq!(ns_pid.as_deref(), Some("1"), "{} is not PID 1 in its namespace", s.binary);
        for _ in 0..3 {
            let status = Command::new("nsenter")
                .args(["--target", &pid.to_string(), "--pid", "--", "sh", "-c", "sleep 0.2 & exit 0"])
                .status()
                .expect("running nsenter");
            assert!(status.success());
        }
        std::thread::sleep(Duration::from_millis(1500));
        let zombies = zombies_of(pid);
        assert!(zombies.is_empty(), "{} left zombies as PID 1: {zombies:?}", s.binary);
    }
}
