//! The console walk of issue 10, in a real headless Chromium ([`crate::browser`]): sign in, the
//! Welcome wizard (endpoints, an API token, the sample scan), the Vulnerability Explorer, a
//! finding and its original advisory, the quickstart's export pack and the offline docs. Each
//! step is a screenshot; any step that fails fails the test. The caller runs it against the
//! Compose quickstart and checks the results against the API and the `stella` CLI.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::browser::Browser;
use crate::http::call;

/// Where the console and API are, and what the walk expects.
pub struct Walk<'a> {
    pub console: String,
    pub api: String,
    /// stella-conseiller, which serves the originals the console shows.
    pub conseiller: String,
    pub password: &'a str,
    /// Every server service's name (`api`, `task-runner`, ...): each must be listed, ready, at
    /// `version`.
    pub services: BTreeSet<String>,
    pub version: &'a str,
}

/// What the walk saw, for the caller's own checks.
pub struct Walked {
    pub browser: Browser,
    /// The API token created in the wizard.
    pub token: String,
    /// The copyable lines of the token page: `curl`, the CLI through Docker, the local CLI.
    pub curl: String,
    pub cli_docker: String,
    pub cli_env: String,
    /// The sample scan and the finding ids the explorer listed for it.
    pub scan: i64,
    pub findings: BTreeSet<i64>,
}

pub fn walk(w: &Walk<'_>) -> Walked {
    let mut b = Browser::start();
    let c = &w.console;

    // Sign in: the first time, the wizard opens. A keyboard user can do it all: the password
    // field submits with Enter.
    b.goto(&format!("{c}/"));
    assert!(b.url().ends_with("/login"), "not signed in, / must lead to the login page: {}", b.url());
    assert!(b.exists("#quickstart-banner"), "the quickstart banner is missing on the login page");
    b.screenshot("01-login");
    b.fill("input[name=username]", "admin");
    b.fill("input[name=password]", "wrong password");
    b.enter("input[name=password]");
    assert_eq!(b.text("#login-error"), "unknown tenant, user or password");
    b.fill("input[name=password]", w.password);
    b.enter("input[name=password]");
    assert!(b.url().ends_with("/welcome"), "the first sign-in must open the wizard: {}", b.url());

    // 1. Endpoints: every service, its version and readiness.
    b.wait_for("#services", Duration::from_secs(10));
    b.screenshot("02-endpoints");
    let listed: BTreeSet<String> = b.attrs("#services tbody tr", "data-service").into_iter().collect();
    assert_eq!(listed, w.services, "the wizard lists other services than the workspace has");
    for s in &w.services {
        let version = b.text(&format!("#services tr[data-service='{s}'] td.version"));
        let ready = b.text(&format!("#services tr[data-service='{s}'] td.ready"));
        assert_eq!((version.as_str(), ready.as_str()), (w.version, "ready"), "stella-{s} in the wizard");
    }
    assert_eq!(b.text("#api-url"), api_as_shown(&w.api), "the API URL the wizard shows");

    // 2. An API token, shown once, that works against the API.
    b.click("a[href='/welcome/token']");
    b.fill("input[name=name]", "wizard-token");
    b.click("form[action='/welcome/token'] button[type=submit]");
    b.wait_for("#token", Duration::from_secs(10));
    b.screenshot("03-token");
    let token = b.text("#token");
    assert!(token.starts_with("stella_"), "{token}");
    let me = call("GET", &format!("{}/api/v1/whoami", w.api), Some(&token), None, &[]);
    assert_eq!(me.status, 200, "the wizard's token is refused by the API: {}", me.text());
    assert_eq!(me.json()["tokenName"], "wizard-token");
    let (curl, cli_docker, cli_env) = (b.text("#curl"), b.text("#cli-docker"), b.text("#cli-env"));
    assert!(curl.contains(&token) && curl.contains("/api/v1/findings"), "{curl}");
    assert_eq!(cli_env, format!("export STELLA_TOKEN={token}"));
    assert!(
        cli_docker.starts_with("docker run --rm --network host -v \"$PWD:/work\" -w /work -e STELLA_TOKEN "),
        "{cli_docker}"
    );

    // 3. The sample scan, followed until its findings and verdict exist.
    b.click("a[href='/welcome/scan']");
    b.click("#import-sample");
    b.wait_for("#verdict", Duration::from_secs(60));
    b.screenshot("04-sample-scan");
    let scan: i64 = b.url().rsplit('/').next().and_then(|s| s.parse().ok()).expect("the scan's page");
    assert!(b.text("#findings-count").ends_with("findings"), "{}", b.text("#findings-count"));

    // 4. The explorer, filtered to the scan.
    b.click("#open-explorer");
    b.wait_for("#findings", Duration::from_secs(10));
    b.screenshot("05-explorer");
    let findings: BTreeSet<i64> =
        b.attrs("#findings tbody tr", "data-finding").iter().filter_map(|s| s.parse().ok()).collect();
    let api_findings = call("GET", &format!("{}/api/v1/findings?scan={scan}", w.api), Some(&token), None, &[]).json();
    let want: BTreeSet<i64> =
        api_findings["items"].as_array().unwrap().iter().filter_map(|f| f["id"].as_i64()).collect();
    assert_eq!(findings, want, "the explorer and the API list different findings for scan {scan}");
    assert!(!findings.is_empty());
    // Filters, through the form as a user sets them: critical only, in this scan (the other
    // fields left empty, as a browser sends them).
    b.select("select[name=severity]", "critical");
    b.click("form.filters button[type=submit]");
    let severities = b.texts("#findings tbody tr td:nth-child(4)");
    assert!(!severities.is_empty(), "the sample scan has a critical finding: {}", b.visible());
    assert!(severities.iter().all(|s| s == "critical"), "{severities:?}");
    assert!(b.url().contains("severity=critical") && b.url().contains(&format!("scan={scan}")), "{}", b.url());

    // A finding, its advisory linkset, and the original document as its source published it.
    let first = findings.iter().next().unwrap();
    b.goto(&format!("{c}/findings/{first}"));
    b.screenshot("06-finding");
    assert!(b.exists("#finding-verdict"));
    b.click("#linkset-link");
    b.wait_for("#links", Duration::from_secs(10));
    b.screenshot("07-advisory-linkset");
    let original = b.attrs("#links a.original", "href").into_iter().next().expect("an original");
    let id = original.rsplit('/').next().unwrap().to_string();
    b.click("#links a.original");
    let shown = b.eval("return document.body.innerText");
    let raw = call("GET", &format!("{}/api/v1/advisories/documents/{id}/raw", w.conseiller), Some(&token), None, &[]);
    let shown: serde_json::Value = serde_json::from_str(shown.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the original advisory is not JSON in the browser ({e}): {shown}"));
    assert!(shown["id"].is_string(), "an OSV document: {shown}");
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(shown, raw.json(), "the console shows another document than Conseiller serves");

    // The banner's "Export pack to production": the pack runs here, through stella-export.
    b.goto(&format!("{c}/findings"));
    b.click("#quickstart-banner a.button");
    b.click("#run-export");
    b.wait_for("#run-status.ok, #run-status.error", Duration::from_secs(90));
    b.screenshot("08-export-pack");
    assert_eq!(b.text("#run-status"), "succeeded", "{}", b.text("#run-steps"));

    // The install docs, offline.
    b.click("#quickstart-banner a[href='/docs']");
    let pages = b.attrs("#docs a", "href");
    assert!(pages.contains(&"/docs/compose-quickstart".to_string()), "{pages:?}");
    b.goto(&format!("{c}/docs/compose-quickstart"));
    b.screenshot("09-install-docs");
    assert!(b.text("main h1").contains("quickstart") || b.text("main h1").contains("Quickstart"));

    // Accessibility basics on every page seen: a language, one h1, a label for every control.
    for (url, _) in b.pages.clone() {
        if url.contains("/documents/") {
            continue;
        }
        b.goto(&url);
        let report = b.eval(
            "const unlabeled = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
               .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.name);
             return {lang: document.documentElement.lang, h1: document.querySelectorAll('h1').length, unlabeled};",
        );
        assert_eq!(report["lang"], "en", "{url}");
        assert_eq!(report["h1"], 1, "{url}");
        assert_eq!(report["unlabeled"], serde_json::json!([]), "{url}: controls without a label");
    }
    Walked { browser: b, token, curl, cli_docker, cli_env, scan, findings }
}

/// The API URL as the console shows it: the same port on `localhost`.
fn api_as_shown(api: &str) -> String {
    api.replace("127.0.0.1", "localhost")
}
