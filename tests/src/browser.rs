//! A real browser for the console's tests: Debian's headless Chromium, driven over WebDriver by
//! `chromedriver` on a loopback port through the `fantoccini` client. The tests are synchronous,
//! so each call runs on a small tokio runtime owned here.
//!
//! Every page the browser shows is kept (its URL and HTML), so a test can check afterwards that
//! no secret ever appeared in one; screenshots go to `target/test-artifacts/console/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::Proc;

pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    _driver: Proc,
    _profile: tempfile::TempDir,
    /// `(url, html)` of every page seen by [`Browser::seen`].
    pub pages: Vec<(String, String)>,
    pub screenshots: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a laptop-sized window.
    pub fn start() -> Browser {
        let port = crate::free_port();
        let env: Vec<(&str, String)> =
            ["PATH", "HOME"].iter().filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))).collect();
        let driver = Proc::spawn(
            std::path::Path::new("/usr/bin/chromedriver"),
            &[&format!("--port={port}"), "--allowed-ips=127.0.0.1"],
            &env,
        );
        let status = format!("http://127.0.0.1:{port}/status");
        assert!(
            crate::wait_status(&status, 200, Duration::from_secs(20)).is_some(),
            "chromedriver did not start (is the chromium-driver package installed? `cargo xtask setup --test`): {}",
            driver.stderr()
        );
        let profile = tempfile::tempdir().expect("a profile directory");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                // As root in a container or CI machine Chromium needs --no-sandbox.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1366,900", "--no-first-run", "--lang=en-US",
                         format!("--user-data-dir={}", profile.path().display())],
            }
        });
        let caps = caps.as_object().expect("an object").clone();
        let client = runtime
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| panic!("starting headless Chromium: {e}\n{}", driver.stderr()));
        let screenshots = crate::root().join("target/test-artifacts/console");
        std::fs::create_dir_all(&screenshots).expect("the screenshot directory");
        Browser { runtime, client: Some(client), _driver: driver, _profile: profile, pages: Vec::new(), screenshots }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    pub fn goto(&mut self, url: &str) {
        let c = self.client().clone();
        self.runtime.block_on(c.goto(url)).unwrap_or_else(|e| panic!("opening {url}: {e}"));
        self.seen();
    }

    /// Records the current page (URL and HTML).
    pub fn seen(&mut self) {
        let c = self.client().clone();
        let (url, html) = self.runtime.block_on(async {
            (c.current_url().await.map(|u| u.to_string()).unwrap_or_default(), c.source().await.unwrap_or_default())
        });
        self.pages.push((url, html));
    }

    pub fn url(&self) -> String {
        let c = self.client().clone();
        self.runtime.block_on(c.current_url()).expect("the current URL").to_string()
    }

    /// Waits (up to `limit`) for an element, reloading nothing: pages that refresh themselves
    /// (scan progress, runs) do so on their own.
    pub fn wait_for(&mut self, css: &str, limit: Duration) {
        let c = self.client().clone();
        let start = Instant::now();
        loop {
            if self.runtime.block_on(c.find(Locator::Css(css))).is_ok() {
                self.seen();
                return;
            }
            assert!(start.elapsed() < limit, "no `{css}` on {} after {limit:?}", self.url());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn exists(&self, css: &str) -> bool {
        let c = self.client().clone();
        self.runtime.block_on(c.find(Locator::Css(css))).is_ok()
    }

    /// Clicks a link or button that leads to another page, and waits for that page.
    pub fn click(&mut self, css: &str) {
        let c = self.client().clone();
        self.leaving();
        self.runtime.block_on(async {
            let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no `{css}`: {e}"));
            e.click().await.unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
        });
        self.arrived(css);
    }

    /// Marks the current document, so [`Browser::arrived`] can tell when another replaced it.
    fn leaving(&self) {
        self.eval("window.__stellaLeaving = true; return null;");
    }

    /// Waits until a new document has replaced the marked one and has loaded.
    fn arrived(&mut self, what: &str) {
        let start = Instant::now();
        loop {
            let c = self.client().clone();
            let state = self.runtime.block_on(
                c.execute("return window.__stellaLeaving === undefined && document.readyState === 'complete';", vec![]),
            );
            if state.ok() == Some(serde_json::Value::Bool(true)) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "`{what}` led to no new page (still {})", self.url());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.seen();
    }

    pub fn fill(&mut self, css: &str, text: &str) {
        let c = self.client().clone();
        self.runtime.block_on(async {
            let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no `{css}`: {e}"));
            e.clear().await.unwrap_or_else(|e| panic!("clearing `{css}`: {e}"));
            e.send_keys(text).await.unwrap_or_else(|e| panic!("typing into `{css}`: {e}"));
        });
    }

    /// Chooses an option of a `<select>` by its value.
    pub fn select(&mut self, css: &str, value: &str) {
        let c = self.client().clone();
        self.runtime.block_on(async {
            let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no `{css}`: {e}"));
            e.select_by_value(value).await.unwrap_or_else(|e| panic!("choosing {value} in `{css}`: {e}"));
        });
    }

    /// Presses Enter in a field: submits its form as a keyboard user would.
    pub fn enter(&mut self, css: &str) {
        let c = self.client().clone();
        self.leaving();
        self.runtime.block_on(async {
            let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no `{css}`: {e}"));
            e.send_keys("\u{E007}").await.unwrap_or_else(|e| panic!("Enter in `{css}`: {e}"));
        });
        self.arrived(css);
    }

    pub fn text(&self, css: &str) -> String {
        let c = self.client().clone();
        let found = self.runtime.block_on(async { c.find(Locator::Css(css)).await?.text().await });
        found.unwrap_or_else(|e| panic!("no `{css}` ({e}) on {}:\n{}", self.url(), self.visible()))
    }

    /// The page's text as a reader sees it, for failure messages.
    pub fn visible(&self) -> String {
        let c = self.client().clone();
        let text = self.runtime.block_on(c.execute("return document.body ? document.body.innerText : ''", vec![]));
        text.ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    pub fn texts(&self, css: &str) -> Vec<String> {
        let c = self.client().clone();
        self.runtime.block_on(async {
            let mut out = Vec::new();
            for e in c.find_all(Locator::Css(css)).await.unwrap_or_default() {
                out.push(e.text().await.unwrap_or_default());
            }
            out
        })
    }

    pub fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        let c = self.client().clone();
        self.runtime.block_on(async {
            let mut out = Vec::new();
            for e in c.find_all(Locator::Css(css)).await.unwrap_or_default() {
                out.push(e.attr(attr).await.ok().flatten().unwrap_or_default());
            }
            out
        })
    }

    /// Runs a script in the page and returns its value.
    pub fn eval(&self, script: &str) -> serde_json::Value {
        let c = self.client().clone();
        self.runtime.block_on(c.execute(script, vec![])).unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Every cookie's value, HttpOnly ones included (WebDriver sees them; page scripts do not).
    pub fn cookies(&self) -> Vec<(String, String)> {
        let c = self.client().clone();
        let cookies = self.runtime.block_on(c.get_all_cookies()).expect("cookies");
        cookies.iter().map(|k| (k.name().to_string(), k.value().to_string())).collect()
    }

    /// Saves a PNG of the window as `<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let c = self.client().clone();
        let png = self.runtime.block_on(c.screenshot()).expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.runtime.block_on(c.close());
        }
    }
}
