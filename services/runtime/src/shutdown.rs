//! Graceful shutdown: SIGTERM (or SIGINT) starts a drain bounded by `STELLA_SHUTDOWN_GRACE`.
//!
//! Order: readiness turns 503 and new requests get 503; in-flight requests finish; the server
//! stops accepting and closes idle connections; background workers are told to stop and flush;
//! the process exits 0, or 1 when the grace period ran out first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Shared drain state: a flag and the number of admitted in-flight requests.
#[derive(Clone)]
pub struct Drain {
    draining: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    stop_tx: Arc<watch::Sender<bool>>,
}

/// Held while a request is being served; dropping it ends the request's count.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for Drain {
    fn default() -> Self {
        Drain { draining: Arc::default(), in_flight: Arc::default(), stop_tx: Arc::new(watch::channel(false).0) }
    }
}

impl Drain {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Admits a request unless draining. Counting before checking the flag means a request can
    /// never slip in after [`Drain::wait_idle`] has seen zero.
    pub fn admit(&self) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.in_flight.clone());
        (!self.is_draining()).then_some(guard)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn start(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Waits until no admitted request is in flight, or `limit` passes; true when idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.in_flight() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Tells background workers to stop.
    pub fn stop_workers(&self) {
        self.stop_tx.send_replace(true);
    }

    /// Resolves once workers have been told to stop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop_tx.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_until_draining_and_waits_for_in_flight() {
        let drain = Drain::default();
        let guard = drain.admit().expect("admitted before draining");
        drain.start();
        assert!(drain.admit().is_none());
        assert_eq!(drain.in_flight(), 1);
        assert!(!drain.wait_idle(Duration::from_millis(20)).await);
        drop(guard);
        assert!(drain.wait_idle(Duration::from_millis(20)).await);
    }
}
