//! The HTTP client configuration (`ureq`) of every outgoing request: webhooks, the model
//! endpoint and feed sources (task steps add the egress policy: `crate::egress::Egress::agent`).
//! Callers run it in `spawn_blocking`: `ureq` is blocking.

use std::time::Duration;

/// What an agent does with a redirect, and with a status that is not a success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirects {
    /// Not followed, and every status (3xx included) is an answer for the caller to judge. Why:
    /// a webhook or the model endpoint is sent a payload or key meant for the configured host
    /// only (task steps refuse redirects too, in their own agent).
    Refused,
    /// `ureq`'s defaults: followed (at most 10), and a 4xx or 5xx status is an error (`http
    /// status: 404`). The feed poller's: its URLs are the operator's configuration, not a
    /// tenant's, and no egress check applies to them.
    Followed,
}

/// An agent whose every request, from the DNS lookup to the last byte of the answer's body, is
/// bounded by `timeout`.
pub fn agent(timeout: Duration, redirects: Redirects) -> ureq::Agent {
    let config = ureq::Agent::config_builder().timeout_global(Some(timeout));
    let config = match redirects {
        Redirects::Refused => config.http_status_as_error(false).max_redirects(0),
        Redirects::Followed => config,
    };
    config.build().into()
}
