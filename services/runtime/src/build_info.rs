//! What `/version` reports, fixed at compile time by `build.rs`.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_commit: &'static str,
    /// RFC 3339, from the source epoch.
    pub build_date: String,
}

impl BuildInfo {
    pub fn current() -> BuildInfo {
        let epoch = env!("STELLA_BUILD_EPOCH").parse().unwrap_or(0);
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            git_commit: env!("STELLA_BUILD_COMMIT"),
            build_date: stella_epoch::rfc3339(epoch),
        }
    }
}
