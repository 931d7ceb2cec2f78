//! The HTTP client configuration (`ureq`) of every outgoing request: webhooks, the model
//! endpoint and feed sources (task steps add the egress policy: `crate::egress::Egress::agent`).
//! Callers run it in `spawn_blocking`: `ureq` is blocking.
//!
//! Trust: Mozilla's roots, compiled in, as `ureq` trusts by default; and when `SSL_CERT_FILE`
//! or `SSL_CERT_DIR` is set (the chart's `global.caBundle` sets `SSL_CERT_DIR`), the
//! certificates found there too, so a site's private CA signs webhooks, feeds, task steps and
//! the model endpoint as it does the export center's S3 store (whose client reads the same two
//! variables).

use std::sync::OnceLock;
use std::time::Duration;

use stella_runtime::tracing::{info, warn};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

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
    let config = ureq::Agent::config_builder().timeout_global(Some(timeout)).tls_config(tls());
    let config = match redirects {
        Redirects::Refused => config.http_status_as_error(false).max_redirects(0),
        Redirects::Followed => config,
    };
    config.build().into()
}

/// The TLS settings of every agent: the roots of [`root_certs`].
pub fn tls() -> TlsConfig {
    TlsConfig::builder().root_certs(root_certs()).build()
}

/// Mozilla's roots, plus every certificate in `SSL_CERT_FILE` and the directories of
/// `SSL_CERT_DIR` when either is set; read once. A file that cannot be read is logged with its
/// path and left out: the other roots still serve.
pub fn root_certs() -> RootCerts {
    static ROOTS: OnceLock<RootCerts> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            site_roots(std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some())
        })
        .clone()
}

fn site_roots(configured: bool) -> RootCerts {
    if !configured {
        return RootCerts::WebPki;
    }
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        warn!(error = %e, "a certificate named by SSL_CERT_FILE or SSL_CERT_DIR was not read; it is not trusted");
    }
    let mozilla = webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned());
    let site = found.certs.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned());
    let certs: Vec<Certificate<'static>> = mozilla.chain(site).collect();
    info!(
        found = found.certs.len(),
        mozilla = webpki_root_certs::TLS_SERVER_ROOT_CERTS.len(),
        "trusting Mozilla's roots and the certificates found through SSL_CERT_FILE and SSL_CERT_DIR"
    );
    RootCerts::new_with_certs(&certs)
}
