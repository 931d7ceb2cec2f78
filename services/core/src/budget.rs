//! The memory budget of SBOM imports: parsing and matching an SBOM takes about
//! [`BYTES_PER_BYTE`] times its size in memory (measured: a 7.7 MB CycloneDX document peaked the
//! API at 223 MB), so imports that run at once are bounded by the sum of their estimates, not by
//! their number. An import waits for room (at most [`WAIT`]), and one that could never fit is
//! refused at once with 413 naming the setting.
//!
//! Why a budget and not a streaming parser: the import needs the whole component list before it
//! can match and write it in one transaction, and the strict field checks read it as a tree.

use std::sync::Arc;
use std::time::Duration;

use stella_runtime::config::{Config, Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use stella_runtime::tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Error;

pub const IMPORT_MEMORY_BUDGET: Setting = s(
    "STELLA_IMPORT_MEMORY_BUDGET",
    SettingKind::Count { min: 16, max: 65536 },
    Fallback::Value("192"),
    "MiB that SBOM imports running at once may use together (each is estimated at 30 times its size); more \
     wait their turn, and an SBOM whose estimate exceeds the whole budget is refused (413). Keep it under the \
     memory limit of stella-api and stella-console.",
);

/// Estimated bytes of memory per byte of SBOM.
pub const BYTES_PER_BYTE: usize = 30;

/// How long an import waits for room before it is refused (503).
pub const WAIT: Duration = Duration::from_secs(60);

/// The budget one service's imports share.
#[derive(Clone, Debug)]
pub struct ImportBudget {
    permits: Arc<Semaphore>,
    mib: u32,
}

impl ImportBudget {
    pub fn new(mib: u32) -> ImportBudget {
        ImportBudget { permits: Arc::new(Semaphore::new(mib as usize)), mib }
    }

    pub fn from_config(config: &Config) -> ImportBudget {
        ImportBudget::new(config.int(IMPORT_MEMORY_BUDGET.name).unwrap_or(192) as u32)
    }

    /// Room for an import of `bytes`: held until the returned permit is dropped.
    pub async fn admit(&self, bytes: usize) -> Result<OwnedSemaphorePermit, Error> {
        let need = (bytes.saturating_mul(BYTES_PER_BYTE)).div_ceil(1 << 20).max(1);
        if need > self.mib as usize {
            let most = (self.mib as usize) << 20;
            return Err(Error::TooLarge(format!(
                "an SBOM of {bytes} bytes needs about {need} MiB to import, more than STELLA_IMPORT_MEMORY_BUDGET \
                 ({} MiB): import at most {} bytes, or raise the budget with the service's memory limit",
                self.mib,
                most / BYTES_PER_BYTE
            )));
        }
        let wait = self.permits.clone().acquire_many_owned(need as u32);
        match stella_runtime::tokio::time::timeout(WAIT, wait).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(e)) => Err(Error::Internal(format!("import budget closed: {e}"))),
            Err(_) => Err(Error::Unavailable(format!(
                "other imports used the memory budget for {} s; retry later",
                WAIT.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[stella_runtime::tokio::test(crate = "stella_runtime::tokio")]
    async fn imports_share_the_budget_and_one_too_large_is_refused() {
        let budget = ImportBudget::new(64);
        let first = budget.admit(1 << 20).await.unwrap(); // 30 MiB
        let second = budget.admit(1 << 20).await.unwrap(); // 60 MiB in all
        assert_eq!(budget.permits.available_permits(), 4);
        drop(first);
        assert_eq!(budget.permits.available_permits(), 34);
        drop(second);
        let e = budget.admit(3 << 20).await.unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("STELLA_IMPORT_MEMORY_BUDGET (64 MiB)"), "{e}");
    }
}
