//! The console over plain HTTP, on the real binaries and a real PostgreSQL: what the browser
//! walk (in `quickstart.rs`, on the Compose stack) does not show. The quickstart banner appears
//! only in quickstart mode; the session cookie is HttpOnly and SameSite=Strict; signing out
//! revokes the session token; a cross-site form post is refused (a sign-out too); every page carries the security
//! headers; the docs route cannot leave its directory; and the console's list of services is
//! the workspace's.

use std::collections::BTreeSet;

use stella_e2e::http::{Reply, call};
use stella_e2e::stack::{self, Stack};

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

fn login(s: &Stack, password: &str, origin: Option<&str>) -> Reply {
    let body = format!("tenant=default&username=admin&password={password}");
    let origin_header = origin.map(|o| ("origin", o));
    let headers: Vec<(&str, &str)> = std::iter::once(FORM).chain(origin_header).collect();
    call("POST", &s.url("console", "/login"), None, Some(body.as_bytes()), &headers)
}

fn session_cookie(r: &Reply) -> String {
    let set = r.header("set-cookie").unwrap_or_else(|| panic!("no Set-Cookie: {} {}", r.status, r.text()));
    set.split(';').next().unwrap().to_string()
}

/// A form post with the session cookie, from `origin` when given (a browser on another site).
fn post(s: &Stack, path: &str, body: &[u8], cookie: &str, origin: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> =
        [("cookie", cookie), FORM].into_iter().chain(origin.map(|o| ("origin", o))).collect();
    call("POST", &s.url("console", path), None, Some(body), &headers)
}

fn page(s: &Stack, path: &str, cookie: &str) -> Reply {
    call("GET", &s.url("console", path), None, None, &[("cookie", cookie)])
}

#[test]
fn outside_quickstart_mode_there_is_no_banner_and_sessions_are_guarded() {
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("overview.md"),
        "# Overview\n\nSee [the quickstart](compose-quickstart.md), [the API](../api.md), [a trap](javascript:alert(1)//://).\n",
    )
    .unwrap();
    std::fs::write(docs.path().join("notes.md"), "No heading, only text.\n").unwrap();
    std::fs::write(docs.path().join("secret.txt"), "not a page").unwrap();
    let mut s = Stack::new(Some(&stack::admin_only()));
    s.start("api", &[]);
    s.start("console", &[("STELLA_CONSOLE_DOCS", docs.path().display().to_string())]);

    // Not signed in: to the login page. The login page has no banner.
    let home = call("GET", &s.url("console", "/"), None, None, &[]);
    assert_eq!((home.status, home.header("location")), (303, Some("/login")));
    let form = call("GET", &s.url("console", "/login"), None, None, &[]);
    assert_eq!(form.status, 200);
    assert!(!form.text().contains("quickstart-banner"), "a banner outside quickstart mode");
    assert!(!form.text().contains(".secrets/admin-password"), "quickstart hints outside quickstart mode");
    // Every page: scripts and styles from the console only, no framing, no caching.
    let csp = form.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(form.header("x-frame-options"), Some("DENY"));
    assert_eq!(form.header("cache-control"), Some("no-store"));

    // A wrong password: 401 and the Authority's message, no cookie.
    let refused = login(&s, "wrong", None);
    assert_eq!(refused.status, 401);
    assert!(refused.text().contains("unknown tenant, user or password"));
    assert!(refused.header("set-cookie").is_none());
    // A form posted from another site is refused before the password is checked.
    let cross = login(&s, stack::PASSWORD, Some("http://evil.example"));
    assert_eq!(cross.status, 403, "{}", cross.text());

    // Signed in: the cookie is HttpOnly and SameSite=Strict, and holds an Authority session token.
    let ok = login(&s, stack::PASSWORD, Some(&s.url("console", "")));
    assert_eq!((ok.status, ok.header("location")), (303, Some("/")));
    let set = ok.header("set-cookie").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "the session cookie lacks {flag}: {set}");
    }
    let cookie = session_cookie(&ok);
    let token = cookie.split_once('=').unwrap().1.to_string();
    assert_eq!(call("GET", &s.url("api", "/api/v1/whoami"), Some(&token), None, &[]).status, 200);
    // First sign-in: the wizard. No banner on any page, and the session token never in a page.
    let home = page(&s, "/", &cookie);
    assert_eq!(home.header("location"), Some("/welcome"));
    for path in ["/welcome", "/welcome/token", "/welcome/scan", "/findings", "/docs", "/docs/overview"] {
        let r = page(&s, path, &cookie);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(!r.text().contains("quickstart-banner"), "{path}: a banner outside quickstart mode");
        assert!(!r.text().contains(&token), "{path}: the session token is in the page");
        assert!(!r.text().contains(stack::PASSWORD), "{path}: the admin password is in the page");
    }
    // Outside quickstart mode: no sample scan and no export pack to run in a real tenant.
    assert!(!page(&s, "/welcome/scan", &cookie).text().contains("import-sample"));
    let sample = post(&s, "/welcome/scan", b"", &cookie, None);
    assert_eq!(sample.status, 404, "{}", sample.text());
    assert_eq!(page(&s, "/quickstart/export", &cookie).status, 404);
    // The explorer's form sends every field, empty ones included.
    let filtered = page(&s, "/findings?severity=&status=&package=&advisory=&scan=", &cookie);
    assert_eq!(filtered.status, 200, "{}", filtered.text());
    assert_eq!(page(&s, "/findings?scan=abc", &cookie).status, 422);
    // A number that is not one gets the console's own error page.
    for (path, status) in [
        ("/findings?offset=abc", 422),
        ("/findings/abc", 404),
        ("/welcome/scan/abc", 404),
        ("/documents/advisories/abc", 404),
    ] {
        let r = page(&s, path, &cookie);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.text().contains("role=\"alert\""), "{path}: not the console's error page: {}", r.text());
    }
    // Past the last page: back to the last page of the same filters (none here: offset 0).
    let past = page(&s, "/findings?severity=critical&package=log4j&offset=500", &cookie);
    assert_eq!(
        (past.status, past.header("location")),
        (303, Some("/findings?offset=0&severity=critical&package=log4j"))
    );
    // Docs: links between pages stay in the console; nothing outside `*.md` is served.
    let overview = page(&s, "/docs/overview", &cookie).text();
    assert!(overview.contains("href=\"/docs/compose-quickstart\""), "{overview}");
    assert!(
        overview.contains("the API") && !overview.contains("api.md"),
        "a link the console cannot serve: {overview}"
    );
    assert!(overview.contains("a trap") && !overview.contains("javascript:"), "a script link: {overview}");
    // A page without a heading is shown whole, titled by its name.
    let notes = page(&s, "/docs/notes", &cookie).text();
    assert!(notes.contains("No heading, only text.") && notes.contains("<h1>notes</h1>"), "{notes}");
    for path in ["/docs/secret.txt", "/docs/..%2Fetc%2Fpasswd", "/docs/Overview"] {
        assert_eq!(page(&s, path, &cookie).status, 404, "{path}");
    }
    // The wizard's last step marks the user onboarded: `/` then opens the explorer.
    let done = post(&s, "/welcome/done", b"", &cookie, None);
    assert_eq!(done.header("location"), Some("/findings"));
    assert_eq!(page(&s, "/", &cookie).header("location"), Some("/findings"));
    // A cross-site post with a valid cookie is refused too.
    let cross = post(&s, "/welcome/token", b"name=x&role=viewer", &cookie, Some("http://evil.example"));
    assert_eq!(cross.status, 403);

    // Another site cannot sign the user out: the post is refused and the cookie kept.
    let cross = post(&s, "/logout", b"", &cookie, Some("http://evil.example"));
    assert_eq!(cross.status, 403, "{}", cross.text());
    assert!(cross.header("set-cookie").is_none(), "a cross-site post cleared the cookie");
    assert_eq!(call("GET", &s.url("api", "/api/v1/whoami"), Some(&token), None, &[]).status, 200);

    // Signing out revokes the session token itself, not only the cookie.
    let out = post(&s, "/logout", b"", &cookie, None);
    assert_eq!(out.header("location"), Some("/login"));
    assert!(out.header("set-cookie").unwrap_or_default().contains("Max-Age=0"));
    assert_eq!(page(&s, "/findings", &cookie).header("location"), Some("/login"));
    assert_eq!(call("GET", &s.url("api", "/api/v1/whoami"), Some(&token), None, &[]).status, 401);

    // In quickstart mode, the banner.
    s.start("console", &[("STELLA_QUICKSTART_MODE", "true".into())]);
    let form = call("GET", &s.url("console", "/login"), None, None, &[]);
    assert!(form.text().contains("id=\"quickstart-banner\""), "no banner in quickstart mode");
}

/// The console's wizard lists the services by a table of its own (name and port): it must be
/// every server the workspace builds, at its documented port.
#[test]
fn the_console_knows_every_server_and_its_port() {
    let mut s = Stack::new(Some(&stack::admin_only()));
    // One service answers on a port the template sends every name to: the wizard shows which
    // services it lists and where.
    s.start("console", &[("STELLA_CONSOLE_SERVICE_URL", "http://127.0.0.1:1/{service}/{port}".into())]);
    let ok = login(&s, stack::PASSWORD, None);
    let cookie = session_cookie(&ok);
    let html = page(&s, "/welcome", &cookie).text();
    let listed: BTreeSet<String> = html
        .match_indices("http://127.0.0.1:1/")
        .map(|(i, _)| html[i + 19..].split('<').next().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = stella_e2e::services()
        .into_iter()
        .filter(|s| s.kind == "server")
        .map(|s| format!("{}/{}", s.service, s.default_port.unwrap()))
        .collect();
    assert_eq!(listed, want);
    assert!(html.contains(&format!("0 of {} services ready", want.len())), "{html}");
}
