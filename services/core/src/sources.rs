//! The configured sources of Conseiller and Excitator, and the worker that polls them.
//!
//! `STELLA_SOURCES` lists `name=location` pairs separated by commas; a location is a JSON file,
//! a directory (its `*.json` files, in name order) or an `http(s)://` URL of one document. Every
//! poll fetches each document with a bound on fetches in flight, retries a failed fetch with
//! exponential backoff, and hands the bytes to [`crate::aggregation::ingest`], which stores
//! only what is new. A poll is an orchestrator job of kind `feed.advisory` or `feed.vex`, which
//! stella-orchestrator enqueues every `STELLA_SOURCES_INTERVAL` (see [`crate::schedules`]): with
//! several replicas, one of them polls per interval, and a poll whose worker dies is retried.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stella_runtime::config::{Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use stella_runtime::sqlx::PgPool;
use stella_runtime::tokio::{self, sync::Semaphore};
use stella_runtime::tracing::{info, warn};

use crate::aggregation::{self, Kind, Outcome};
use crate::http::{self, Redirects};
use crate::urls::public_url;

// Secret: a URL may carry credentials; kept out of logs and /config, and readable from a file.
pub const SOURCES: Setting = s(
    "STELLA_SOURCES",
    SettingKind::Text,
    Fallback::None,
    "Sources to poll, comma-separated name=location pairs; a location is a JSON file, a directory of \
                  *.json files or an http(s):// URL (credentials in the URL are never shown), e.g. \
                  osv=/var/lib/stella/feeds/osv,vendor=https://vendor.example/vex.json.",
)
.secret();
pub const INTERVAL: Setting = s(
    "STELLA_SOURCES_INTERVAL",
    SettingKind::Duration,
    Fallback::Value("5m"),
    "How often every source is polled: the orchestrator enqueues a poll at this interval (stella-orchestrator must run).",
);
pub const IN_FLIGHT: Setting = s(
    "STELLA_SOURCES_IN_FLIGHT",
    SettingKind::Count { min: 1, max: 64 },
    Fallback::Value("4"),
    "Most documents fetched at once, over all sources.",
);
pub const ATTEMPTS: Setting = s(
    "STELLA_SOURCES_ATTEMPTS",
    SettingKind::Count { min: 1, max: 10 },
    Fallback::Value("4"),
    "Attempts per fetch before it counts as failed for this poll (backoff 1 s, 2 s, 4 s, ...).",
);

/// The settings a source-polling service adds.
pub const SETTINGS: &[Setting] = &[INTERVAL, IN_FLIGHT, ATTEMPTS];

/// One configured source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Path(PathBuf),
    Url(String),
}

/// Parses `STELLA_SOURCES`; the error says which entry is wrong and what is expected.
pub fn parse(raw: &str) -> Result<Vec<Source>, String> {
    let mut out: Vec<Source> = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, location) = entry
            .split_once('=')
            .ok_or(format!("`{entry}` is not name=location (e.g. osv=/var/lib/stella/feeds/osv)"))?;
        let name = name.trim();
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !valid || name == "upload" || name.starts_with("seed-") {
            return Err(format!(
                "source name `{name}`: use lower-case letters, digits, '-', '_' or '.'; `upload` and `seed-*` are reserved"
            ));
        }
        if out.iter().any(|s| s.name == name) {
            return Err(format!("source name `{name}` is used twice"));
        }
        let location = location.trim();
        let location = if location.starts_with("http://") || location.starts_with("https://") {
            Location::Url(location.to_string())
        } else if location.starts_with('/') {
            Location::Path(PathBuf::from(location))
        } else {
            return Err(format!("source `{name}`: `{location}` is neither an absolute path nor an http(s):// URL"));
        };
        out.push(Source { name: name.to_string(), location });
    }
    Ok(out)
}

/// The `check` of [`SOURCES`] for [`stella_runtime::Service::checked_setting`].
pub fn check(raw: &str) -> Result<(), String> {
    parse(raw).map(|_| ())
}

/// Starts the polling worker when sources and a database are configured.
pub fn spawn(ctx: &stella_runtime::Context, kind: Kind) {
    let sources = parse(ctx.config.text(SOURCES.name).unwrap_or_default()).expect("validated at start-up");
    if sources.is_empty() {
        info!(kind = kind.as_str(), "no sources configured (STELLA_SOURCES); documents arrive only by upload");
        return;
    }
    let Some(db) = ctx.db.clone() else {
        warn!("STELLA_SOURCES is set but STELLA_DATABASE_URL is not: sources are not polled");
        return;
    };
    let config = &ctx.config;
    let poller = Poller {
        db,
        kind,
        sources,
        in_flight: Arc::new(Semaphore::new(config.int(IN_FLIGHT.name).unwrap_or(4) as usize)),
        attempts: config.int(ATTEMPTS.name).unwrap_or(4) as u32,
    };
    let interval = config.duration(INTERVAL.name).unwrap_or(Duration::from_secs(300));
    let attempts = config.int(crate::jobs::ATTEMPTS.name).unwrap_or(3).clamp(1, 100) as i32;
    let job_kind = feed_kind(kind);
    // The orchestrator enqueues a poll every interval (one replica polls per interval); this
    // service registers the schedule, retrying until the database answers, and runs the polls.
    let registry = poller.db.clone();
    ctx.repeat("feed-schedule", move || {
        let registry = registry.clone();
        async move {
            match crate::schedules::register_system(&registry, job_kind, job_kind, interval, attempts).await {
                Ok(()) => {
                    info!(schedule = job_kind, every = ?interval, "feed poll schedule registered");
                    ControlFlow::Break(())
                }
                Err(e) => {
                    warn!(error = %e, "registering the feed poll schedule failed; retrying");
                    ControlFlow::Continue(Duration::from_secs(5))
                }
            }
        }
    });
    crate::jobs::spawn(ctx, crate::jobs::Worker::new(ctx, job_kind), poller);
}

/// The orchestrator job kind (and system schedule name) of a kind's feed polls.
pub fn feed_kind(kind: Kind) -> &'static str {
    match kind {
        Kind::Advisory => "feed.advisory",
        Kind::Vex => "feed.vex",
    }
}

impl crate::jobs::Handler for Poller {
    async fn run(&self, _job: &crate::jobs::Leased) -> crate::jobs::Outcome {
        crate::jobs::Outcome::Done(self.poll().await)
    }
}

struct Poller {
    db: PgPool,
    kind: Kind,
    sources: Vec<Source>,
    in_flight: Arc<Semaphore>,
    attempts: u32,
}

/// Counts of one poll, logged per source.
#[derive(Default, Debug)]
struct Tally {
    stored: u32,
    unchanged: u32,
    rejected: u32,
    failed: u32,
}

impl Poller {
    /// One poll of every source; the tallies, source by source.
    async fn poll(&self) -> serde_json::Value {
        let mut summary = serde_json::Map::new();
        for source in &self.sources {
            let items = match list(&source.location).await {
                Ok(items) => items,
                Err(e) => {
                    warn!(source = %source.name, error = %e, "cannot list the source; trying again next poll");
                    summary.insert(source.name.clone(), serde_json::json!({"error": e}));
                    continue;
                }
            };
            let mut tasks = tokio::task::JoinSet::new();
            for (locator, location) in items {
                let permit = self.in_flight.clone().acquire_owned().await.expect("semaphore open");
                let attempts = self.attempts;
                tasks.spawn(async move {
                    let fetched = fetch(&location, attempts).await;
                    drop(permit);
                    (locator, fetched)
                });
            }
            let mut tally = Tally::default();
            while let Some(joined) = tasks.join_next().await {
                let Ok((locator, fetched)) = joined else { continue };
                let body = match fetched {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(source = %source.name, %locator, error = %e, "fetch failed");
                        tally.failed += 1;
                        continue;
                    }
                };
                match aggregation::ingest(&self.db, self.kind, &source.name, &locator, &body).await {
                    Ok(Outcome::Stored { id }) => {
                        info!(source = %source.name, %locator, document = id, "stored a new original");
                        tally.stored += 1;
                    }
                    Ok(Outcome::Unchanged { .. }) => tally.unchanged += 1,
                    Ok(Outcome::Rejected { problem, new }) => {
                        // Said once: the same bytes are refused the same way at every poll.
                        if new {
                            warn!(source = %source.name, %locator, %problem, "rejected a document");
                        }
                        tally.rejected += 1;
                    }
                    Err(e) => {
                        warn!(source = %source.name, %locator, error = %e, "could not store a document");
                        tally.failed += 1;
                    }
                }
            }
            info!(source = %source.name, stored = tally.stored, unchanged = tally.unchanged,
                  rejected = tally.rejected, failed = tally.failed, "polled");
            summary.insert(
                source.name.clone(),
                serde_json::json!({"stored": tally.stored, "unchanged": tally.unchanged,
                                   "rejected": tally.rejected, "failed": tally.failed}),
            );
        }
        serde_json::Value::Object(summary)
    }
}

/// The documents of a location: `(locator, where to fetch it)`.
async fn list(location: &Location) -> Result<Vec<(String, Location)>, String> {
    match location {
        // The locator is shown to every tenant and logged: without credentials or query.
        Location::Url(u) => Ok(vec![(public_url(u), location.clone())]),
        Location::Path(p) => {
            let meta = tokio::fs::metadata(p).await.map_err(|e| format!("{}: {e}", p.display()))?;
            if meta.is_file() {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                return Ok(vec![(name, location.clone())]);
            }
            let mut names = Vec::new();
            let mut dir = tokio::fs::read_dir(p).await.map_err(|e| format!("{}: {e}", p.display()))?;
            while let Some(entry) = dir.next_entry().await.map_err(|e| format!("{}: {e}", p.display()))? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") && !name.starts_with('.') {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names.into_iter().map(|n| (n.clone(), Location::Path(p.join(n)))).collect())
        }
    }
}

/// The bytes of one document, with `attempts` tries and exponential backoff.
async fn fetch(location: &Location, attempts: u32) -> Result<Vec<u8>, String> {
    /// Largest document accepted: feeds' single documents are far smaller.
    const LIMIT: u64 = 16 << 20;
    let mut delay = Duration::from_secs(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        let result = match location {
            Location::Path(p) => tokio::fs::read(p).await.map_err(|e| format!("{}: {e}", p.display())),
            Location::Url(u) => {
                let u = u.clone();
                tokio::task::spawn_blocking(move || {
                    let agent = http::agent(Duration::from_secs(30), Redirects::Followed);
                    let shown = public_url(&u);
                    let mut response = agent.get(&u).call().map_err(|e| format!("{shown}: {e}"))?;
                    response.body_mut().with_config().limit(LIMIT).read_to_vec().map_err(|e| format!("{shown}: {e}"))
                })
                .await
                .map_err(|e| e.to_string())?
            }
        };
        match result {
            Ok(b) => return Ok(b),
            Err(e) => last = e,
        }
        if attempt < attempts {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
    Err(format!("{last} (after {attempts} attempts)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_errors_name_the_entry() {
        let s = parse("osv=/feeds/osv, vendor=https://vendor.example/vex.json").unwrap();
        assert_eq!(s[0], Source { name: "osv".into(), location: Location::Path("/feeds/osv".into()) });
        assert_eq!(s[1].location, Location::Url("https://vendor.example/vex.json".into()));
        assert!(parse("").unwrap().is_empty());
        assert!(parse("osv").unwrap_err().contains("`osv` is not name=location"));
        assert!(parse("osv=feeds").unwrap_err().contains("neither an absolute path"));
        assert!(parse("upload=/x").unwrap_err().contains("reserved"));
        assert!(parse("a=/x,a=/y").unwrap_err().contains("used twice"));
    }
}
