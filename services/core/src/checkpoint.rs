//! Signed checkpoints of each tenant's ledger head, kept outside the database.
//!
//! The hash chain shows an edit in the middle, but whoever owns the tables could delete a
//! chain's last events, or rewrite events and recompute every later hash, and the chain would
//! still verify. So the ledger service signs, every `STELLA_LEDGER_CHECKPOINT_INTERVAL`, each
//! tenant's verified head (`{"tenant", "seq", "head", "at"}`, OLPC canonical JSON, ECDSA P-256
//! with SHA-256, base64 DER as `openssl dgst -sha256 -sign` writes) with a key that is not in
//! the database (`STELLA_LEDGER_CHECKPOINT_KEY`, a PKCS#8 PEM secret file), and writes it to the
//! object store (`ledger/checkpoints/tenant-<id>.json`). [`crate::ledger::verify`] then requires
//! the chain to still hold the checkpointed event with the checkpointed hash: a truncation or a
//! rewrite before the checkpoint is found, even by the database's owner.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stella_runtime::config::{Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tracing::{info, warn};

use crate::Error;

pub const KEY: Setting = s(
    "STELLA_LEDGER_CHECKPOINT_KEY",
    SettingKind::Text,
    Fallback::None,
    "PKCS#8 PEM private key (ECDSA P-256) that signs each tenant's ledger head into the object store, so that \
     verify detects deleted or rewritten events; keep it outside the database. Unset: no checkpoints. Give it as \
     STELLA_LEDGER_CHECKPOINT_KEY_FILE.",
)
.secret();

pub const INTERVAL: Setting = s(
    "STELLA_LEDGER_CHECKPOINT_INTERVAL",
    SettingKind::Duration,
    Fallback::Value("1m"),
    "How often the ledger service signs each tenant's new head.",
);

/// Parses the key; the error says what to give (for the start-up check, exit 78).
pub fn parse_key(pem: &str) -> Result<SigningKey, String> {
    SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
        format!(
            "not a PKCS#8 PEM ECDSA P-256 private key ({e}); make one with \
             `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
        )
    })
}

/// One signed head.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub tenant: i64,
    pub seq: i64,
    pub head: String,
    pub at: String,
}

#[derive(Serialize, Deserialize)]
struct Signed {
    checkpoint: Checkpoint,
    /// Base64 of the DER signature over the checkpoint's canonical JSON.
    signature: String,
}

fn canonical(c: &Checkpoint) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    c.serialize(&mut ser).expect("a checkpoint has no floats");
    out
}

/// The checkpoints of one deployment: the key and where they are kept.
pub struct Checkpoints {
    key: SigningKey,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checkpoints")
    }
}

impl Checkpoints {
    pub fn new(key: SigningKey, store: Arc<dyn ObjectStore>) -> Checkpoints {
        Checkpoints { key, store }
    }

    /// From the service's settings: `None` without a key; a key without a usable object store
    /// is logged, and also gives `None`.
    pub fn from_config(config: &stella_runtime::config::Config) -> Option<Arc<Checkpoints>> {
        let key = parse_key(config.text(KEY.name)?).ok()?;
        match crate::exports::store(&crate::exports::StoreConfig::from(config)) {
            Ok(store) => Some(Arc::new(Checkpoints::new(key, store))),
            Err(e) => {
                warn!(problem = %e, "STELLA_LEDGER_CHECKPOINT_KEY is set, but there is no object store: no checkpoints");
                None
            }
        }
    }

    fn path(tenant: i64) -> StorePath {
        StorePath::from(format!("ledger/checkpoints/tenant-{tenant}.json"))
    }

    /// The tenant's last checkpoint, its signature checked; `Err` when it is there but not
    /// signed by this key (a forged or damaged checkpoint is a failed verification).
    pub async fn read(&self, tenant: i64) -> Result<Option<Checkpoint>, String> {
        let bytes = match self.store.get(&Self::path(tenant)).await {
            Ok(found) => found.bytes().await.map_err(|e| format!("reading the checkpoint: {e}"))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(format!("reading the checkpoint: {e}")),
        };
        let signed: Signed = serde_json::from_slice(&bytes).map_err(|e| format!("the checkpoint is damaged: {e}"))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(&signed.signature)
            .map_err(|e| format!("the checkpoint's signature is not base64: {e}"))?;
        let signature =
            DerSignature::try_from(der.as_slice()).map_err(|e| format!("the checkpoint's signature: {e}"))?;
        VerifyingKey::from(&self.key)
            .verify(&canonical(&signed.checkpoint), &signature)
            .map_err(|_| "the checkpoint is not signed by this ledger's key".to_string())?;
        if signed.checkpoint.tenant != tenant {
            return Err(format!("the checkpoint of tenant {tenant} names tenant {}", signed.checkpoint.tenant));
        }
        Ok(Some(signed.checkpoint))
    }

    async fn write(&self, checkpoint: &Checkpoint) -> Result<(), String> {
        let signature: Signature = self.key.sign(&canonical(checkpoint));
        let signed = Signed {
            checkpoint: checkpoint.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes()),
        };
        let body = serde_json::to_vec_pretty(&signed).map_err(|e| e.to_string())?;
        self.store.put(&Self::path(checkpoint.tenant), body.into()).await.map_err(|e| format!("writing: {e}"))?;
        Ok(())
    }

    /// Signs each tenant's head that moved since its checkpoint, once the chain verifies against
    /// that checkpoint (a chain that does not is never blessed: it is logged instead).
    pub async fn round(self: &Arc<Self>, db: &PgPool) -> Result<(), Error> {
        let heads: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT DISTINCT ON (tenant_id) tenant_id, seq, hash FROM stella.tenant_ledger ORDER BY tenant_id, seq DESC",
        )
        .fetch_all(db)
        .await?;
        for (tenant, seq, head) in heads {
            let verification = crate::ledger::verify(db, tenant, Some(self)).await?;
            if !verification.valid {
                warn!(tenant, problem = ?verification.problem, "the ledger chain does not verify: no checkpoint signed");
                continue;
            }
            if verification.checkpoint.as_ref().is_some_and(|c| c["seq"] == seq) {
                continue;
            }
            let at: String = sqlx::query_scalar("SELECT stella.rfc3339(now())").fetch_one(db).await?;
            let checkpoint = Checkpoint { tenant, seq, head, at };
            match self.write(&checkpoint).await {
                Ok(()) => info!(tenant, seq, "ledger checkpoint signed"),
                Err(e) => warn!(tenant, problem = %e, "the ledger checkpoint could not be written"),
            }
        }
        Ok(())
    }
}

/// Signs checkpoints every `STELLA_LEDGER_CHECKPOINT_INTERVAL` (the ledger service).
pub fn spawn(ctx: &stella_runtime::Context, checkpoints: Option<Arc<Checkpoints>>) {
    let (Some(checkpoints), Some(db)) = (checkpoints, ctx.db.clone()) else { return };
    let every = ctx.config.duration(INTERVAL.name).unwrap_or(Duration::from_secs(60));
    ctx.every("ledger checkpoints", every, move || {
        let (checkpoints, db) = (checkpoints.clone(), db.clone());
        async move {
            if let Err(e) = checkpoints.round(&db).await {
                warn!(error = %e, "signing ledger checkpoints failed");
            }
        }
    });
}

/// What a verification shows of a checkpoint.
pub fn shown(c: &Checkpoint) -> Value {
    json!({"seq": c.seq, "head": c.head, "at": c.at})
}
