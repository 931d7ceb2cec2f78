//! The StellaOps core on a real PostgreSQL, through the real service binaries: aggregation only
//! (Conseiller and Excitator), authority (tokens, roles, tenants), scans and findings with VEX,
//! the policy verdicts and the findings ledger, and the quickstart seed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use stella_e2e::http::call;
use stella_e2e::stack::{Listener, PASSWORD, Stack, admin_only, eventually, quickstart};

/// Two documents that disagree about one vulnerability, a changed version of the first, and a
/// malformed one, for advisories (OSV) or VEX (OpenVEX).
struct Corpus {
    service: &'static str,
    path: &'static str,
    kind: &'static str,
    key: &'static str,
    a: String,
    b: String,
    a_changed: String,
    bad: String,
    bad_problem: &'static str,
}

fn osv(id: &str, alias: &str, severity: &str, fixed: &str) -> String {
    format!(
        r#"{{"id":"{id}","modified":"2026-01-01T00:00:00Z","aliases":["{alias}"],"summary":"demo",
  "database_specific":{{"severity":"{severity}"}},
  "affected":[{{"package":{{"ecosystem":"npm","name":"left-pad"}},"ranges":[{{"type":"SEMVER","events":[{{"introduced":"0"}},{{"fixed":"{fixed}"}}]}}]}}]}}"#
    )
}

fn openvex(id: &str, vulnerability: &str, status: &str) -> String {
    format!(
        r#"{{"@context":"https://openvex.dev/ns/v0.2.0","@id":"{id}","author":"t","timestamp":"2026-01-01T00:00:00Z","version":1,
  "statements":[{{"vulnerability":{{"name":"{vulnerability}"}},"products":[{{"@id":"pkg:npm/left-pad@1.0.0"}}],"status":"{status}"}}]}}"#
    )
}

fn corpora() -> Vec<Corpus> {
    vec![
        Corpus {
            service: "conseiller",
            path: "advisories",
            kind: "advisory",
            key: "CVE-2099-0001",
            a: osv("GHSA-aaaa-aaaa-aaaa", "CVE-2099-0001", "HIGH", "1.2.0"),
            b: osv("OSV-2099-0001", "CVE-2099-0001", "CRITICAL", "1.3.0"),
            a_changed: osv("GHSA-aaaa-aaaa-aaaa", "CVE-2099-0001", "HIGH", "1.2.1"),
            bad: osv("GHSA-bbbb", "CVE-2099-0002", "HIGH", "1.0").replace("\"fixed\"", "\"patched\""),
            bad_problem: "unknown event `patched`",
        },
        Corpus {
            service: "excitator",
            path: "vex",
            kind: "vex",
            key: "CVE-2099-0001",
            a: openvex("https://vendor-a/vex/1", "CVE-2099-0001", "not_affected"),
            b: openvex("https://vendor-b/vex/1", "CVE-2099-0001", "affected"),
            a_changed: openvex("https://vendor-a/vex/1", "CVE-2099-0001", "fixed"),
            bad: openvex("https://vendor-a/vex/2", "CVE-2099-0002", "safe"),
            bad_problem: "statements[0].status: `safe` is not one of",
        },
    ]
}

/// For Conseiller and Excitator alike: two conflicting originals come back byte-identical and
/// linked side by side; polling again stores nothing; a changed upstream document is a new
/// original and the old one is kept; a malformed one is recorded and kept out; the database
/// refuses to change or delete an original; uploads of bad documents are a 422 naming the problem.
#[test]
fn conseiller_and_excitator_only_aggregate() {
    for c in corpora() {
        let mut stack = Stack::new(Some(&admin_only()));
        let feeds = tempfile::tempdir().unwrap();
        let (dir_a, dir_b) = (feeds.path().join("a"), feeds.path().join("b"));
        std::fs::create_dir_all(&dir_a).unwrap();
        std::fs::create_dir_all(&dir_b).unwrap();
        std::fs::write(dir_a.join("doc.json"), &c.a).unwrap();
        std::fs::write(dir_a.join("bad.json"), &c.bad).unwrap();
        std::fs::write(dir_b.join("doc.json"), &c.b).unwrap();
        stack.start("api", &[]);
        let sources = format!("vendor-a={},vendor-b={}", dir_a.display(), dir_b.display());
        // The orchestrator enqueues the polls (every second, the shortest schedule).
        stack.start("orchestrator", &[("STELLA_SCHEDULER_TICK", "1h".into())]);
        stack.start(
            c.service,
            &[("STELLA_SOURCES", sources), ("STELLA_SOURCES_INTERVAL", "1s".into()), ("STELLA_JOBS_POLL", "1h".into())],
        );
        let token = stack.admin_token();
        let linkset_path = format!("/api/v1/{}/linksets/{}", c.path, c.key);
        let links = |stack: &Stack| -> Vec<Value> {
            let r = stack.get(c.service, &linkset_path, &token);
            if r.status != 200 {
                return vec![];
            }
            let doc = r.json();
            assert_eq!(doc["merge"], false);
            doc["links"].as_array().unwrap().clone()
        };
        let first = eventually(&format!("{}: both originals linked", c.service), Duration::from_secs(20), || {
            let l = links(&stack);
            (l.len() == 2).then_some(l)
        });
        for (link, original) in first.iter().zip([&c.a, &c.b]) {
            let raw = stack.get(c.service, link["raw"].as_str().unwrap(), &token);
            assert_eq!(raw.status, 200);
            assert_eq!(raw.body, original.as_bytes(), "{}: the original changed on the way", c.service);
            assert_eq!(raw.header("x-content-sha256"), Some(stella_core::sha256_hex(original.as_bytes()).as_str()));
            assert_eq!(link["current"], true);
        }
        // Each link carries the facts of its own original: the disagreement stays visible.
        if c.kind == "advisory" {
            assert_eq!(first[0]["advisory"]["severity"], "high");
            assert_eq!(first[1]["advisory"]["severity"], "critical");
        } else {
            assert_eq!(first[0]["statement"]["status"], "not_affected");
            assert_eq!(first[1]["statement"]["status"], "affected");
        }
        // Later polls find the same bytes: nothing new is stored.
        let count =
            || stack.pg.query(&format!("SELECT count(*) FROM stella.source_documents WHERE kind = '{}'", c.kind));
        eventually("a later poll finds the same bytes", Duration::from_secs(20), || {
            stack.log(c.service).contains("\"unchanged\":1").then_some(())
        });
        assert_eq!(count(), "2", "{}: re-ingesting duplicated a document", c.service);
        assert_eq!(stack.log(c.service).matches("rejected a document").count(), 1, "the rejection is logged once");
        // The malformed document is recorded with its source and the problem, and linked nowhere.
        let rejections = stack.get(c.service, &format!("/api/v1/{}/rejections", c.path), &token).json();
        let rejected = &rejections.as_array().unwrap()[0];
        assert_eq!(rejected["source"], "vendor-a");
        assert_eq!(rejected["locator"], "bad.json");
        assert!(rejected["problem"].as_str().unwrap().contains(c.bad_problem), "{rejected}");
        let bad_key = format!("/api/v1/{}/linksets/CVE-2099-0002", c.path);
        assert_eq!(stack.get(c.service, &bad_key, &token).status, 404);

        // A changed upstream document: a new original, the old one kept and still served.
        std::fs::write(dir_a.join("doc.json"), &c.a_changed).unwrap();
        let after = eventually(&format!("{}: the changed original stored", c.service), Duration::from_secs(20), || {
            let l = links(&stack);
            (l.len() == 3).then_some(l)
        });
        let old = after.iter().find(|l| l["id"] == first[0]["id"]).expect("the old original is still linked");
        assert_eq!(old["current"], false);
        assert_eq!(stack.get(c.service, old["raw"].as_str().unwrap(), &token).body, c.a.as_bytes());
        let new =
            after.iter().find(|l| l["sha256"] == stella_core::sha256_hex(c.a_changed.as_bytes()).as_str()).unwrap();
        assert_eq!(new["current"], true);
        assert_eq!(stack.get(c.service, new["raw"].as_str().unwrap(), &token).body, c.a_changed.as_bytes());

        // The originals cannot be changed or deleted, not even by the database owner.
        for sql in [
            "UPDATE stella.source_documents SET body = 'x'".to_string(),
            "DELETE FROM stella.source_documents".to_string(),
            "TRUNCATE stella.source_documents CASCADE".to_string(),
        ] {
            let e = stack.pg.try_query(&sql).expect_err(&sql);
            assert!(e.contains("append-only"), "{sql}: {e}");
        }
        // Every indexed row belongs to exactly one original: nothing combines two.
        let per_document = match c.kind {
            "advisory" => {
                "SELECT count(*) FROM stella.advisories a JOIN stella.source_documents d ON d.id = a.document_id"
            }
            _ => "SELECT count(DISTINCT document_id) FROM stella.vex_statements",
        };
        assert_eq!(stack.pg.query(per_document), "3");

        // An upload: bad input is a 422 that names the problem and stores nothing; viewers may not upload.
        let upload = stack.url(c.service, &format!("/api/v1/{}/documents?name=upload.json", c.path));
        let r = call("POST", &upload, Some(&token), Some(c.bad.as_bytes()), &[]);
        assert_eq!(r.status, 422, "{}", r.text());
        assert!(r.json()["message"].as_str().unwrap().contains(c.bad_problem), "{}", r.text());
        assert_eq!(count(), "3");
        let r = call("POST", &upload, Some(&token), Some(c.b.as_bytes()), &[]);
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(call("POST", &upload, Some(&token), Some(c.b.as_bytes()), &[]).status, 200);
        assert_eq!(call("POST", &upload, None, Some(c.b.as_bytes()), &[]).status, 401);
        let capabilities = call("GET", &stack.url(c.service, "/capabilities"), None, None, &[]).json();
        assert_eq!(capabilities["merge"], false);
    }
}

/// Tokens are shown once and stored hashed, roles limit what a token may do, revocation is
/// immediate, and a token sees only its own tenant.
#[test]
fn authority_tokens_roles_and_tenants() {
    let mut stack = Stack::new(Some(&admin_only()));
    stack.start("api", &[]);
    let api = |path: &str| stack.url("api", path);

    assert_eq!(stack.login("default", "admin", "wrong-password-123").status, 401);
    assert_eq!(stack.login("default", "nobody", PASSWORD).status, 401);
    let admin = stack.admin_token();
    assert_eq!(call("GET", &api("/api/v1/findings"), None, None, &[]).status, 401);
    assert_eq!(call("GET", &api("/api/v1/findings"), Some("stella_not-a-token"), None, &[]).status, 401);
    assert_eq!(call("GET", &api("/version"), None, None, &[]).status, 200, "the contract routes stay open");
    let me = stack.get("api", "/api/v1/whoami", &admin).json();
    assert_eq!(
        (me["tenant"].as_str(), me["username"].as_str(), me["role"].as_str()),
        (Some("default"), Some("admin"), Some("admin"))
    );

    // A viewer token: shown once, stored only as a hash, read-only.
    let body = br#"{"name": "ci-reader", "role": "viewer"}"#;
    let r = call("POST", &api("/api/v1/tokens"), Some(&admin), Some(body), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let issued = r.json();
    let viewer = issued["token"].as_str().unwrap().to_string();
    assert!(viewer.starts_with("stella_") && viewer.len() == 50, "{viewer}");
    let listed = stack.get("api", "/api/v1/tokens", &admin);
    assert!(!listed.text().contains(&viewer), "the token list shows the secret");
    assert_eq!(
        stack.pg.query(&format!("SELECT count(*) FROM stella.api_tokens WHERE token_sha256 LIKE '%{}%'", &viewer[7..])),
        "0"
    );
    assert_eq!(stack.get("api", "/api/v1/findings", &viewer).status, 200);
    let sbom = br#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[]}"#;
    assert_eq!(call("POST", &api("/api/v1/scans"), Some(&viewer), Some(sbom), &[]).status, 403);
    let r = call("POST", &api("/api/v1/tokens"), Some(&viewer), Some(br#"{"name": "x", "role": "viewer"}"#), &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    // An operator cannot mint an admin token.
    let operator =
        call("POST", &api("/api/v1/tokens"), Some(&admin), Some(br#"{"name": "ci", "role": "operator"}"#), &[]).json();
    let operator = operator["token"].as_str().unwrap().to_string();
    let r = call("POST", &api("/api/v1/tokens"), Some(&operator), Some(br#"{"name": "up", "role": "admin"}"#), &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = call("POST", &api("/api/v1/tokens"), Some(&admin), Some(br#"{"name": "x", "role": "root"}"#), &[]);
    assert_eq!(r.status, 422);
    assert!(r.text().contains("`root` is not one of viewer, operator, admin"), "{}", r.text());

    // Revocation takes effect on the next request.
    let id = issued["id"].as_i64().unwrap();
    assert_eq!(call("DELETE", &api(&format!("/api/v1/tokens/{id}")), Some(&admin), None, &[]).status, 204);
    assert_eq!(stack.get("api", "/api/v1/findings", &viewer).status, 401);

    // A second tenant: its scans are invisible to the first, and naming another tenant is refused.
    let hash = stella_core::authority::hash_password("other-tenant-password").unwrap();
    stack.pg.query(&format!(
        "WITH t AS (INSERT INTO stella.tenants (slug, display_name) VALUES ('other', 'Other') RETURNING id)
         INSERT INTO stella.users (tenant_id, username, password_hash, role) SELECT id, 'alice', '{hash}', 'admin' FROM t"
    ));
    let r = stack.login("other", "alice", "other-tenant-password");
    assert_eq!(r.status, 201, "{}", r.text());
    let alice = r.json()["token"].as_str().unwrap().to_string();
    let r = call("POST", &api("/api/v1/scans?name=other-app"), Some(&alice), Some(sbom), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let scan = r.json()["id"].as_i64().unwrap();
    assert_eq!(stack.get("api", &format!("/api/v1/scans/{scan}"), &alice).status, 200);
    assert_eq!(stack.get("api", &format!("/api/v1/scans/{scan}"), &admin).status, 404);
    assert_eq!(stack.get("api", "/api/v1/scans", &admin).json().as_array().unwrap().len(), 0);
    let r = call("GET", &api("/api/v1/scans"), Some(&admin), None, &[("x-stella-tenant", "other")]);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("belongs to tenant `default`, not `other`"), "{}", r.text());
    // Advisories and VEX apply to every tenant: another tenant's admin may not upload them.
    stack.start("excitator", &[]);
    let vex = openvex("https://other/vex/1", "CVE-2021-44228", "not_affected");
    let r = call(
        "POST",
        &stack.url("excitator", "/api/v1/vex/documents?name=x.json"),
        Some(&alice),
        Some(vex.as_bytes()),
        &[],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("only an admin of the `default` tenant"), "{}", r.text());
    assert_eq!(stack.pg.query("SELECT count(*) FROM stella.source_documents"), "0");
    assert!(!stack.log("api").contains(PASSWORD) && !stack.log("api").contains(&admin), "a secret reached the log");
}

/// Outside quickstart mode there is no default account; quickstart mode without a password fails
/// clearly instead of inventing one.
#[test]
fn no_default_credentials_outside_quickstart() {
    let stack = Stack::new(Some(&[]));
    assert_eq!(stack.pg.query("SELECT count(*) FROM stella.users"), "0");
    assert_eq!(stack.pg.query("SELECT count(*) FROM stella.source_documents"), "0");
    let (code, log) = stack.migrate(Some(&[("STELLA_QUICKSTART_MODE", "true".to_string())]));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("STELLA_ADMIN_PASSWORD_FILE"), "{log}");
}

/// The quickstart seed through the API: two scans (SPDX and CycloneDX) matched against the seeded
/// advisories with VEX applied, verdicts from the policy service, a ledger whose chain verifies
/// and detects an edit, and links that lead to the originals byte for byte.
#[test]
fn scans_findings_verdicts_and_the_ledger() {
    let mut stack = Stack::new(Some(&quickstart()));
    let (code, log) = stack.migrate(Some(&quickstart()));
    assert_eq!(code, 0, "second seed: {log}");
    assert!(
        log.contains("\"documents_stored\":0")
            && log.contains("\"scans_imported\":0")
            && log.contains("\"packs_registered\":0"),
        "re-seeding added data: {log}"
    );
    assert_eq!(
        stack.pg.query("SELECT string_agg(name || ' ' || version, ', ' ORDER BY name) FROM stella.task_packs"),
        "export-to-production 1.0.0, stack-health 1.0.0"
    );
    stack.start("api", &[]);
    stack.start("policy", &[("STELLA_POLICY_INTERVAL", "1h".into())]);
    stack.start("ledger", &[]);
    stack.start("conseiller", &[]);
    stack.start("excitator", &[]);
    let token = stack.admin_token();

    let scans = stack.get("api", "/api/v1/scans", &token).json();
    let scans = scans.as_array().unwrap();
    let by_name: BTreeMap<&str, i64> =
        scans.iter().map(|s| (s["name"].as_str().unwrap(), s["id"].as_i64().unwrap())).collect();
    assert_eq!(by_name.keys().copied().collect::<Vec<_>>(), ["demo-payments", "demo-web"]);
    let verdict = |name: &str| {
        eventually(&format!("a verdict for {name}"), Duration::from_secs(20), || {
            let s = stack.get("api", &format!("/api/v1/scans/{}", by_name[name]), &token).json();
            (!s["verdict"].is_null()).then(|| s["verdict"].clone())
        })
    };
    assert_eq!(verdict("demo-payments")["outcome"], "pass");
    let web = verdict("demo-web");
    assert_eq!(web["outcome"], "fail");
    assert_eq!(web["policyVersion"], 1);
    assert_eq!(web["violations"].as_array().unwrap().len(), 2, "{web}");

    let findings = |query: &str| stack.get("api", &format!("/api/v1/findings?{query}"), &token).json();
    let all = findings("limit=100");
    assert_eq!(all["total"], 4, "{all}");
    let by_purl: BTreeMap<&str, &Value> =
        all["items"].as_array().unwrap().iter().map(|f| (f["purl"].as_str().unwrap(), f)).collect();
    let log4j_vexed = by_purl["pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"];
    assert_eq!(
        (log4j_vexed["severity"].as_str(), log4j_vexed["status"].as_str()),
        (Some("critical"), Some("not_affected"))
    );
    assert_eq!(log4j_vexed["vex"][0]["status"], "not_affected");
    let log4j = by_purl["pkg:maven/org.apache.logging.log4j/log4j-core@2.12.1"];
    assert_eq!((log4j["severity"].as_str(), log4j["status"].as_str()), (Some("critical"), Some("affected")));
    assert_eq!(by_purl["pkg:npm/lodash@4.17.20"]["severity"], "high");
    // The two sources disagree about time 0.1.45: only the one whose range includes it is linked.
    let time = by_purl["pkg:cargo/time@0.1.45"];
    assert_eq!((time["severity"].as_str(), time["status"].as_str()), (Some("medium"), Some("under_investigation")));
    assert_eq!(time["advisories"].as_array().unwrap().len(), 1);
    assert_eq!(time["linkset"]["key"], "CVE-2020-26235");
    let linkset = stack.get("conseiller", time["linkset"]["href"].as_str().unwrap(), &token).json();
    assert_eq!(linkset["links"].as_array().unwrap().len(), 2, "both sources stay in the linkset: {linkset}");
    // Following a finding's links leads to the originals, byte for byte.
    let raw = stack.get("conseiller", time["advisories"][0]["raw"].as_str().unwrap(), &token);
    assert_eq!(
        raw.body,
        std::fs::read(stella_e2e::root().join("services/core/seed/osv-a/GHSA-wcg3-cvx6-7396.json")).unwrap()
    );
    let raw = stack.get("excitator", log4j_vexed["vex"][0]["raw"].as_str().unwrap(), &token);
    assert_eq!(raw.body, std::fs::read(stella_e2e::root().join("services/core/seed/openvex/demo-vex.json")).unwrap());

    // Filters and paging.
    assert_eq!(findings("severity=critical")["total"], 2);
    assert_eq!(findings("status=affected")["total"], 2);
    assert_eq!(findings("package=lodash")["total"], 1);
    assert_eq!(findings("package=LODASH")["total"], 1, "the package filter ignores case");
    // LIKE wildcards are text: `%` and `_` match only themselves (none of these purls has them).
    assert_eq!(findings("package=%25")["total"], 0);
    assert_eq!(findings("package=lod_sh")["total"], 0);
    assert_eq!(findings("advisory=GHSA-35jh-r3h4-6jhm")["total"], 1, "an alias finds the linkset");
    assert_eq!(findings(&format!("scan={}", by_name["demo-web"]))["total"], 2);
    let page = findings("limit=1&offset=1");
    assert_eq!((page["items"].as_array().unwrap().len(), page["total"].as_i64()), (1, Some(4)));
    assert_eq!(page["items"][0]["id"], all["items"][1]["id"]);
    let r = stack.get("api", "/api/v1/findings?severity=urgent", &token);
    assert_eq!(r.status, 422);
    assert!(r.text().contains("`urgent` is not one of"), "{}", r.text());

    // Import: the same SBOM again is the same scan; a malformed one is a 422 naming the problem
    // and writes nothing.
    let spdx = std::fs::read(stella_e2e::root().join("services/core/seed/sboms/demo-payments.spdx.json")).unwrap();
    let r = call("POST", &stack.url("api", "/api/v1/scans"), Some(&token), Some(&spdx), &[]);
    assert_eq!((r.status, r.json()["id"].as_i64()), (200, Some(by_name["demo-payments"])));
    let events_before = stack.pg.query("SELECT count(*) FROM stella.tenant_ledger");
    for (bad, problem) in [
        (&b"{\"spdxVersion\": \"SPDX-2.3\", \"name\": \"x\"}"[..], "packages: missing"),
        (b"not json", "not JSON"),
        (
            b"{\"bomFormat\":\"CycloneDX\",\"specVersion\":\"1.5\",\"components\":[{\"purl\":\"npm/x\"}]}",
            "components[0].purl",
        ),
    ] {
        let r = call("POST", &stack.url("api", "/api/v1/scans"), Some(&token), Some(bad), &[]);
        assert_eq!(r.status, 422, "{}", r.text());
        assert!(r.text().contains(problem), "{}", r.text());
    }
    // A name with a control character (a NUL, which PostgreSQL cannot store), empty or too long
    // is the input's fault: a 422 naming it, before anything is looked up or stored.
    let long = "n".repeat(201);
    for name in ["a%00b", "", "%20", long.as_str()] {
        let r =
            call("POST", &stack.url("api", &format!("/api/v1/scans?name={name}")), Some(&token), Some(&spdx[..]), &[]);
        assert_eq!(r.status, 422, "{name}: {}", r.text());
        assert!(r.text().contains("a scan name is 1 to 200 characters"), "{}", r.text());
    }
    let other = br#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[]}"#;
    let r = call("POST", &stack.url("api", "/api/v1/scans?name=a%00b"), Some(&token), Some(other), &[]);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(stack.pg.query("SELECT count(*) FROM stella.scans"), "2");
    assert_eq!(stack.pg.query("SELECT count(*) FROM stella.tenant_ledger"), events_before);

    // The ledger: every import, finding, VEX application and verdict, in one verified chain.
    let events = stack.get("ledger", "/api/v1/ledger/events?limit=500", &token).json();
    let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in ["scan.imported", "finding.found", "vex.applied", "policy.verdict"] {
        assert!(kinds.contains(&kind), "no {kind} event: {kinds:?}");
    }
    let verify = stack.get("ledger", "/api/v1/ledger/verify", &token).json();
    assert_eq!(verify["valid"], true, "{verify}");
    assert_eq!(verify["events"].as_u64(), Some(kinds.len() as u64));
    assert!(
        stack
            .pg
            .try_query("UPDATE stella.tenant_ledger SET kind = 'x' WHERE seq = 2")
            .unwrap_err()
            .contains("append-only")
    );
    // Around the trigger (as the database owner can), an edit is found at the event edited.
    stack.pg.query(
        "ALTER TABLE stella.tenant_ledger DISABLE TRIGGER tenant_ledger_append_only;
         UPDATE stella.tenant_ledger SET payload = jsonb_set(payload, '{severity}', '\"low\"') WHERE seq = 3;
         ALTER TABLE stella.tenant_ledger ENABLE TRIGGER tenant_ledger_append_only;",
    );
    let verify = stack.get("ledger", "/api/v1/ledger/verify", &token).json();
    assert_eq!(
        (verify["valid"].as_bool(), verify["brokenAt"].as_i64(), verify["chain"].as_str()),
        (Some(false), Some(3), Some("tenant")),
        "{verify}"
    );
    let policies = stack.get("policy", "/api/v1/policies", &token).json();
    assert_eq!(policies[0]["name"], "baseline");
    let verdicts = stack.get("policy", &format!("/api/v1/scans/{}/verdicts", by_name["demo-web"]), &token).json();
    assert_eq!(verdicts[0]["outcome"], "fail");
    assert!(Path::new(&stella_e2e::root().join("services/core/seed/README.md")).exists());
}

/// A source at an http:// URL that is down at first: the fetch is retried with backoff within a
/// poll, and the document is stored once the server answers.
#[test]
fn url_sources_are_fetched_with_retries() {
    let mut stack = Stack::new(Some(&admin_only()));
    let served = tempfile::tempdir().unwrap();
    let doc = osv("GHSA-cccc-cccc-cccc", "CVE-2099-0003", "LOW", "2.0.0");
    std::fs::write(served.path().join("advisory.json"), &doc).unwrap();
    // At first the port answers every connection by closing it, counting them: the fetches
    // fail, and the count shows that they were tried.
    let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = refusing.local_addr().unwrap().port();
    refusing.set_nonblocking(true).unwrap();
    let (tried, stop) = (std::sync::Arc::new(AtomicUsize::new(0)), std::sync::Arc::new(AtomicBool::new(false)));
    let refuser = {
        let (tried, stop) = (tried.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match refusing.accept() {
                    Ok((stream, _)) => {
                        tried.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
    };
    let source = format!("remote=http://127.0.0.1:{port}/advisory.json");
    stack.start("api", &[]);
    stack.start("orchestrator", &[("STELLA_SCHEDULER_TICK", "1h".into())]);
    stack.start(
        "conseiller",
        &[
            ("STELLA_JOBS_POLL", "1h".into()),
            ("STELLA_SOURCES", source),
            ("STELLA_SOURCES_INTERVAL", "1h".into()),
            ("STELLA_SOURCES_ATTEMPTS", "6".into()),
        ],
    );
    // A fetch failed; then the real server takes the port, within the backoff.
    eventually("a fetch of the URL source fails", Duration::from_secs(20), || {
        (tried.load(Ordering::SeqCst) >= 1).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    refuser.join().unwrap();
    let mut server = std::process::Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(served.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let token = stack.admin_token();
    let linkset = ingested(&stack, &token, "CVE-2099-0003", "the URL source ingested after retries");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(linkset["links"][0]["source"], "remote");
    assert_eq!(linkset["links"][0]["locator"], format!("http://127.0.0.1:{port}/advisory.json"));
    let raw = stack.get("conseiller", linkset["links"][0]["raw"].as_str().unwrap(), &token);
    assert_eq!(raw.body, doc.as_bytes());
    assert_eq!(stack.pg.query("SELECT count(*) FROM stella.source_documents"), "1");
}

/// A source served over HTTPS by a server whose certificate a site's private CA signed (Python's
/// `ssl`, that is OpenSSL, serving; openssl making the CA): refused while the CA is unknown, with
/// the reason in the log; fetched once `SSL_CERT_DIR` names a directory holding the CA, as the
/// chart's `global.caBundle` mounts it. The same agent serves webhooks, task steps and the model
/// endpoint.
#[test]
fn a_site_ca_in_ssl_cert_dir_is_trusted_for_https_sources() {
    let mut stack = Stack::new(Some(&admin_only()));
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = stella_e2e::site_ca(certs.path());
    let trusted = tempfile::tempdir().unwrap();
    std::fs::copy(&ca, trusted.path().join("site-ca.pem")).unwrap();
    let served = tempfile::tempdir().unwrap();
    let doc = osv("GHSA-dddd-dddd-dddd", "CVE-2099-0004", "LOW", "3.0.0");
    std::fs::write(served.path().join("advisory.json"), &doc).unwrap();
    let server = "import http.server, ssl, sys\n\
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        ctx.load_cert_chain(sys.argv[1], sys.argv[2])\n\
        srv = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
        print(srv.server_address[1], flush=True)\n\
        srv.serve_forever()\n";
    let mut https = std::process::Command::new("python3")
        .args(["-c", server])
        .arg(&cert)
        .arg(&key)
        .current_dir(served.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(https.stdout.take().unwrap()), &mut first).unwrap();
    let port: u16 = first.trim().parse().unwrap_or_else(|_| panic!("the HTTPS server printed {first:?}"));
    let locator = format!("https://127.0.0.1:{port}/advisory.json");
    let sources = format!("remote={locator}");
    let conseiller = |ca_dir: Option<&Path>| {
        let mut env = vec![
            ("STELLA_JOBS_POLL", "1h".to_string()),
            ("STELLA_SOURCES", sources.clone()),
            ("STELLA_SOURCES_INTERVAL", "1h".to_string()),
            ("STELLA_SOURCES_ATTEMPTS", "1".to_string()),
        ];
        env.extend(ca_dir.map(|d| ("SSL_CERT_DIR", d.display().to_string())));
        env
    };
    stack.start("api", &[]);
    stack.start("orchestrator", &[("STELLA_SCHEDULER_TICK", "1h".into())]);
    // Without the CA: the fetch fails on the certificate, and nothing is stored.
    stack.start("conseiller", &conseiller(None));
    let refused = eventually("the fetch is refused", Duration::from_secs(30), || {
        stack.log("conseiller").lines().find(|l| l.contains("fetch failed")).map(String::from)
    });
    assert!(refused.contains(&locator) && refused.to_lowercase().contains("certificate"), "{refused}");
    assert_eq!(stack.pg.query("SELECT count(*) FROM stella.source_documents"), "0");
    drop(stack.services.remove("conseiller"));
    // With the CA in SSL_CERT_DIR: fetched and stored.
    stack.start("conseiller", &conseiller(Some(trusted.path())));
    let token = stack.admin_token();
    let linkset = ingested(&stack, &token, "CVE-2099-0004", "the HTTPS source ingested");
    let _ = https.kill();
    let _ = https.wait();
    assert_eq!(linkset["links"][0]["locator"], locator);
    let log = stack.log("conseiller");
    assert!(log.contains("trusting Mozilla's roots and the certificates found"), "{log}");
}

/// Conseiller's linkset of `alias`, once a source's document for it is stored (within 30 s).
fn ingested(stack: &Stack, token: &str, alias: &str, what: &str) -> Value {
    eventually(what, Duration::from_secs(30), || {
        let r = stack.get("conseiller", &format!("/api/v1/advisories/linksets/{alias}"), token);
        (r.status == 200).then(|| r.json())
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `requests` across `threads` threads; returns the sorted latencies and the wall time.
fn load(threads: usize, requests: usize, f: impl Fn(usize) + Sync) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || {
                    (t..requests)
                        .step_by(threads)
                        .map(|i| {
                            let begin = Instant::now();
                            f(i);
                            begin.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    latencies.sort();
    (latencies, start.elapsed())
}

/// A bounded load test on loopback: concurrent SBOM imports and findings queries against the
/// API on a real PostgreSQL, every answer checked; p50, p99 and throughput printed beside a
/// baseline measured in the same run (`GET /version`, which touches no database). No timing is
/// asserted: figures go to the closing notes, not into pass or fail.
#[test]
fn load_sbom_imports_and_findings_queries() {
    let mut stack = Stack::new(Some(&quickstart()));
    stack.start("api", &[("STELLA_DATABASE_POOL_SIZE", "8".into())]);
    let token = stack.admin_token();
    const THREADS: usize = 4;
    const IMPORTS: usize = 120;
    const QUERIES: usize = 600;
    // Each SBOM: 40 components, two of which match seeded advisories.
    let sbom = |i: usize| {
        let mut components: Vec<Value> = (0..38)
            .map(|c| serde_json::json!({"type": "library", "name": format!("lib{c}"), "purl": format!("pkg:npm/lib{c}@1.{i}.{c}")}))
            .collect();
        components.push(
            serde_json::json!({"type": "library", "name": "lodash", "purl": format!("pkg:npm/lodash@4.17.{}", i % 20)}),
        );
        components.push(serde_json::json!({"type": "library", "name": "log4j-core",
            "purl": format!("pkg:maven/org.apache.logging.log4j/log4j-core@2.{}.0", i % 15)}));
        serde_json::json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": components}).to_string()
    };
    let url = stack.url("api", "/api/v1/scans");
    let (imports, imports_wall) = load(THREADS, IMPORTS, |i| {
        let r = call("POST", &format!("{url}?name=load-{i}"), Some(&token), Some(sbom(i).as_bytes()), &[]);
        assert_eq!(r.status, 201, "import {i}: {}", r.text());
        assert_eq!(r.json()["findings"]["total"], 2, "import {i}: {}", r.text());
    });
    let findings = stack.url("api", "/api/v1/findings");
    let filters =
        ["severity=critical", "status=affected&limit=20", "package=lodash&offset=40", "advisory=CVE-2021-44228", ""];
    let (queries, queries_wall) = load(THREADS, QUERIES, |i| {
        let r = call("GET", &format!("{findings}?{}", filters[i % filters.len()]), Some(&token), None, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["total"].as_i64().unwrap() > 0);
    });
    let version = stack.url("api", "/version");
    let (baseline, baseline_wall) = load(THREADS, QUERIES, |_| {
        assert_eq!(call("GET", &version, None, None, &[]).status, 200);
    });
    assert_eq!(stack.pg.query("SELECT count(*) FROM stella.scans WHERE name LIKE 'load-%'"), IMPORTS.to_string());
    let verify = stack.get("api", "/api/v1/findings?limit=1", &token);
    assert_eq!(verify.json()["total"], 4 + 2 * IMPORTS as i64);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let row = |what: &str, l: &[Duration], wall: Duration| {
        println!(
            "{what:<32} {:>5} requests  p50 {:>7.2} ms  p99 {:>7.2} ms  {:>7.1} req/s  (p50 {:.1}x baseline)",
            l.len(),
            ms(percentile(l, 0.5)),
            ms(percentile(l, 0.99)),
            l.len() as f64 / wall.as_secs_f64(),
            percentile(l, 0.5).as_secs_f64() / percentile(&baseline, 0.5).as_secs_f64()
        );
    };
    println!("load test, {THREADS} client threads on loopback, API pool of 8 connections:");
    row("baseline GET /version", &baseline, baseline_wall);
    row("POST /api/v1/scans (40 components)", &imports, imports_wall);
    row("GET /api/v1/findings (filters)", &queries, queries_wall);
}

/// Task packs: registration is validated and immutable per version; in offline mode a step to a
/// host outside the allow-list fails with the egress error and opens no connection (the listener
/// sees nothing); with the host allowed, the same pack succeeds.
#[test]
fn offline_mode_blocks_egress_before_connecting() {
    let mut stack = Stack::new(Some(&admin_only()));
    stack.start("api", &[]);
    let offline = [("STELLA_OFFLINE", "true".to_string()), ("STELLA_JOBS_POLL", "1h".to_string())];
    stack.start("task-runner", &offline);
    let token = stack.admin_token();
    let listener = Listener::start();
    let pack = format!(
        r#"{{"apiVersion": "stella-ops.org/v1", "kind": "TaskPack", "name": "mirror-check", "version": "1.0.0",
            "steps": [{{"id": "pause", "type": "wait", "seconds": 0}},
                      {{"id": "fetch", "type": "http", "url": "http://127.0.0.1:{}/osv/index.json"}}]}}"#,
        listener.port
    );
    let packs = stack.url("task-runner", "/api/v1/packs");
    assert_eq!(call("POST", &packs, Some(&token), Some(pack.as_bytes()), &[]).status, 201);
    assert_eq!(call("POST", &packs, Some(&token), Some(pack.as_bytes()), &[]).status, 200, "the same pack again");
    let changed = pack.replace("\"seconds\": 0", "\"seconds\": 1");
    let r = call("POST", &packs, Some(&token), Some(changed.as_bytes()), &[]);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("new version"), "{}", r.text());
    let r = call("POST", &packs, Some(&token), Some(pack.replace("\"wait\"", "\"sleep\"").as_bytes()), &[]);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("unknown variant `sleep`"), "{}", r.text());

    let run_until_done = |stack: &Stack| -> Value {
        let start = call("POST", &stack.url("task-runner", "/api/v1/packs/mirror-check/runs"), Some(&token), None, &[]);
        assert_eq!(start.status, 202, "{}", start.text());
        let id = start.json()["id"].as_i64().unwrap();
        eventually("the run finishes", Duration::from_secs(20), || {
            let run = stack.get("task-runner", &format!("/api/v1/runs/{id}"), &token).json();
            ["succeeded", "failed"].contains(&run["status"].as_str().unwrap()).then_some(run)
        })
    };
    let run = run_until_done(&stack);
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["reason"], "step fetch: egress blocked: 127.0.0.1 is not allowed in offline mode", "{run}");
    assert_eq!(run["steps"][0]["status"], "succeeded");
    assert_eq!(run["steps"][1]["status"], "failed");
    // The step failed before its request, and the run is recorded after the step: a connection
    // it made would already be counted.
    assert_eq!(listener.connections(), 0, "offline mode opened a connection");

    // The same pack with the host allowed: the step connects and the run succeeds.
    stack.start("task-runner", &[offline[0].clone(), offline[1].clone(), ("STELLA_EGRESS_ALLOW", "127.0.0.1".into())]);
    let run = run_until_done(&stack);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(listener.connections(), 1);
    assert!(run["steps"][1]["detail"].as_str().unwrap().ends_with(": 200"), "{run}");
}
