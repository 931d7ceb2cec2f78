//! Workers woken by PostgreSQL notifications instead of polling.
//!
//! The triggers of migration `0010_wake.sql` notify the channel [`CHANNEL`] with a topic whenever
//! a worker gets something to do (`job:<kind>`, `schedule`, `verdicts`); PostgreSQL delivers the
//! notification when the writing transaction commits. One listener per process (a dedicated
//! connection, `LISTEN stella_wake`) bumps a `watch` channel per topic, and each worker loop
//! waits on its topic's channel or its fallback pause, whichever comes first
//! (`Context::repeat_or_woken`). So an idle stack does no polling work, and new work starts in
//! milliseconds.
//!
//! Notifications are a hint, never the source of truth: a worker still claims its work in
//! PostgreSQL as before. A notification sent while the listener is reconnecting is lost, so every
//! topic is bumped when the connection is lost and again once it is back (each worker then looks
//! once), and every worker keeps a slow fallback poll (`STELLA_JOBS_POLL` and its peers).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stella_runtime::sqlx::PgPool;
use stella_runtime::sqlx::postgres::PgListener;
use stella_runtime::tokio;
use stella_runtime::tracing::{info, warn};
use tokio::sync::watch;

/// The channel the triggers notify; the payload is the topic.
pub const CHANNEL: &str = "stella_wake";

/// The topics of one process: a `watch` sender each, made on first use.
#[derive(Clone, Default)]
pub struct Wakes(Arc<Mutex<BTreeMap<String, watch::Sender<u64>>>>);

impl Wakes {
    /// A receiver for `topic`: its `changed()` resolves at the topic's next notification.
    pub fn topic(&self, topic: &str) -> watch::Receiver<u64> {
        let mut topics = self.0.lock().expect("wake topics lock");
        topics.entry(topic.to_string()).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    fn bump(&self, topic: &str) {
        if let Some(tx) = self.0.lock().expect("wake topics lock").get(topic) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn bump_all(&self) {
        for tx in self.0.lock().expect("wake topics lock").values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Starts a listener (its own connection) and returns its topics. Without a database there is
/// nothing to listen to: the topics never change and workers poll.
pub fn start(ctx: &stella_runtime::Context) -> Wakes {
    let wakes = Wakes::default();
    if let Some(db) = ctx.db.clone() {
        let listening = wakes.clone();
        ctx.spawn_worker("wake listener", move |stopped| listen(db, listening, stopped));
    }
    wakes
}

async fn listen(db: PgPool, wakes: Wakes, mut stopped: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&db).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, stella_runtime::sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = &mut stopped => return,
            l = connected => match l {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "cannot listen for work notifications; workers poll until it can");
                    tokio::select! { _ = &mut stopped => return, _ = tokio::time::sleep(backoff) => {} }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        info!(channel = CHANNEL, "listening for work notifications");
        backoff = Duration::from_millis(500);
        // Anything may have happened while no one listened: every worker looks once.
        wakes.bump_all();
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                received = listener.try_recv() => match received {
                    Ok(Some(n)) => wakes.bump(n.payload()),
                    // The connection was lost: look once, then connect again.
                    Ok(None) | Err(_) => {
                        warn!("lost the work notification connection; workers poll until it is back");
                        wakes.bump_all();
                        break;
                    }
                },
            }
        }
    }
}
