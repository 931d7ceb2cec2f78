//! The Welcome wizard's "confirm endpoints": each service's `/version` and
//! `/health/readiness`, all asked at once (two threads per service) with a short timeout, so
//! services that are down cost two seconds together, not two seconds each.

use std::time::Duration;

use crate::settings::{SERVICES, Settings};

/// What one service answered.
pub struct Probe {
    pub service: &'static str,
    pub url: String,
    /// `/version`'s `version`, or why it could not be read.
    pub version: Result<String, String>,
    /// Ready, or the readiness answer / connection error.
    pub ready: Result<(), String>,
}

const TIMEOUT: Duration = Duration::from_secs(2);

/// Every service of [`SERVICES`], in that order.
pub async fn all(settings: &Settings) -> Vec<Probe> {
    let targets: Vec<(&'static str, String)> =
        SERVICES.iter().map(|(name, port)| (*name, settings.url_of(name, *port))).collect();
    // Blocking HTTP on the blocking pool: one thread per service, joined together.
    stella_runtime::tokio::task::spawn_blocking(move || {
        let agent = stella_core::http::agent(TIMEOUT, stella_core::http::Redirects::Refused);
        std::thread::scope(|scope| {
            let handles: Vec<_> = targets
                .into_iter()
                .map(|(service, url)| {
                    let agent = agent.clone();
                    scope.spawn(move || probe(&agent, service, url))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("probe thread")).collect()
        })
    })
    .await
    // A probe thread cannot panic short of a bug; say so rather than show an empty table.
    .unwrap_or_else(|e| {
        SERVICES
            .iter()
            .map(|(name, port)| Probe {
                service: name,
                url: settings.url_of(name, *port),
                version: Err(format!("probe failed: {e}")),
                ready: Err(format!("probe failed: {e}")),
            })
            .collect()
    })
}

/// Both questions at once, so a service that hangs costs [`TIMEOUT`] once, not twice.
fn probe(agent: &ureq::Agent, service: &'static str, url: String) -> Probe {
    let (version, ready) = std::thread::scope(|scope| {
        let version = scope.spawn(|| version(agent, &url));
        let ready = ready(agent, &url);
        (version.join().unwrap_or_else(|_| Err("probe failed".to_string())), ready)
    });
    Probe { service, url, version, ready }
}

fn version(agent: &ureq::Agent, url: &str) -> Result<String, String> {
    get(agent, &format!("{url}/version")).and_then(|(status, body)| {
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|_| format!("HTTP {status}: not JSON"))?;
        v["version"].as_str().map(str::to_string).ok_or_else(|| format!("HTTP {status}: no version"))
    })
}

fn ready(agent: &ureq::Agent, url: &str) -> Result<(), String> {
    get(agent, &format!("{url}/health/readiness")).and_then(|(status, body)| {
        if status == 200 {
            Ok(())
        } else {
            Err(format!("HTTP {status}: {}", body.chars().take(200).collect::<String>()))
        }
    })
}

fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, String), String> {
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.body_mut().with_config().limit(64 << 10).read_to_string().map_err(|e| e.to_string())?;
    Ok((status, body))
}
