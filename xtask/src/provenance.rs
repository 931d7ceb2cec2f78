//! Provenance: an in-toto Statement v1 with a SLSA provenance v1 predicate per image, signed
//! with the image key in a DSSE envelope; [`crate::sigstore`] attaches it to the image index as a
//! Sigstore bundle referrer and as a layer of cosign's `sha256-<hex>.att` tag.
//!
//! It holds no wall-clock field (no start or finish time, no invocation id), so the same build
//! gives the same statement; ECDSA with RFC 6979 makes the envelope repeat too.

use std::process::Command;

use base64::Engine;
use p256::ecdsa::SigningKey;
use serde_json::{Value, json};

use crate::plan::{ImagePlan, Plan};
use crate::shell;

pub const STATEMENT: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE: &str = "https://slsa.dev/provenance/v1";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const BUILD_TYPE: &str = "https://stella-ops.org/distribution/images/v1";

/// What the provenance records about the toolchain, read once per build.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// `rustc -vV` output, first line (`rustc 1.95.0 (59807616e 2026-04-14)`).
    pub rustc: String,
    /// SHA-256 of the rustc binary that compiled the images.
    pub rustc_digest: String,
}

impl Toolchain {
    pub fn read() -> anyhow::Result<Toolchain> {
        let root = shell::root();
        let version = shell::output(Command::new("rustc").arg("-vV").current_dir(&root))?;
        let sysroot = shell::output(Command::new("rustc").args(["--print", "sysroot"]).current_dir(&root))?;
        let binary = std::path::Path::new(sysroot.trim()).join("bin/rustc");
        let bytes = std::fs::read(&binary)?;
        Ok(Toolchain {
            rustc: version.lines().next().unwrap_or_default().to_string(),
            rustc_digest: crate::layer::sha256(&bytes),
        })
    }
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// The in-toto statement for `image`, whose index and manifests are the subjects.
pub fn statement(
    plan: &Plan,
    image: &ImagePlan,
    entry: &Value,
    tool: &Toolchain,
    subjects: &[(String, String)],
) -> Value {
    let source = image.labels.get("org.opencontainers.image.source").cloned().unwrap_or_default();
    let lock = plan.inputs.get("Cargo.lock").cloned().unwrap_or_default();
    let triples: Vec<&str> = image.platforms.iter().map(|p| Plan::platform(p).triple).collect();
    json!({
        "_type": STATEMENT,
        "subject": subjects
            .iter()
            .map(|(name, digest)| json!({ "name": name, "digest": { "sha256": hex_of(digest) } }))
            .collect::<Vec<_>>(),
        "predicateType": PREDICATE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "image": image.name,
                    "catalogEntry": entry,
                    "platforms": image.platforms,
                    "tags": plan.tags,
                    "source": { "repository": source, "commit": plan.revision },
                },
                "internalParameters": {
                    "toolchain": tool.rustc,
                    "targets": triples,
                    "profile": "release",
                    "sourceDateEpoch": plan.epoch,
                },
                "resolvedDependencies": [
                    { "uri": format!("git+{source}@{}", plan.revision), "digest": { "gitCommit": plan.revision } },
                    { "uri": "Cargo.lock", "digest": { "sha256": hex_of(&lock) } },
                    { "uri": format!("pkg:generic/rustc@{}", tool.rustc.split_whitespace().nth(1).unwrap_or_default()), "digest": { "sha256": hex_of(&tool.rustc_digest) } },
                ],
            },
            "runDetails": {
                "builder": { "id": format!("https://stella-ops.org/distribution/xtask@v{}", env!("CARGO_PKG_VERSION")) },
                "metadata": {},
            },
        },
    })
}

/// A statement's bytes as a DSSE payload: compact JSON with the keys of each object in a fixed
/// order. Not OLPC canonical JSON, which leaves control characters unescaped (an SBOM's license
/// text has newlines) and so is not JSON to strict parsers such as Python's.
pub fn payload(statement: &Value) -> Vec<u8> {
    serde_json::to_vec(statement).expect("a JSON value serializes")
}

/// DSSE pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope over `statement`, signed by `key`; the key id is the public key's
/// fingerprint (`sha256:<hex>` of its DER), as in `images.json`.
pub fn envelope(key: &SigningKey, statement: &Value) -> Vec<u8> {
    let payload = payload(statement);
    let sig = crate::sign::sign_bytes(key, &pae(PAYLOAD_TYPE, &payload));
    let b64 = base64::engine::general_purpose::STANDARD;
    crate::oci::canonical(&json!({
        "payloadType": PAYLOAD_TYPE,
        "payload": b64.encode(&payload),
        "signatures": [{ "keyid": crate::sign::fingerprint(key), "sig": b64.encode(sig) }],
    }))
}
