//! Zombie reaping when the service runs as PID 1 (a container without an init process).
//!
//! The kernel re-parents orphans to PID 1; if nobody waits for them they stay as zombies until
//! the container stops. Services spawn no children of their own, so reaping any child is safe.

/// Starts the reaper when this process is PID 1; otherwise does nothing.
pub fn spawn_if_pid1() {
    if std::process::id() != 1 {
        return;
    }
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut children) = signal(SignalKind::child()) else {
            tracing::warn!("cannot watch SIGCHLD; orphaned children will not be reaped");
            return;
        };
        tracing::debug!("running as PID 1: reaping orphaned children");
        while children.recv().await.is_some() {
            reap_all();
        }
    });
}

/// Waits for every exited child without blocking.
fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG only reads process state and writes `status`, a valid
        // local; it has no other memory effects.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
        tracing::debug!(pid, status, "reaped child");
    }
}
