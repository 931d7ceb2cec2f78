//! The console's own settings: where the other services are, the API URL users are shown, the
//! `stella` CLI image and the directory of the offline docs.

use stella_runtime::config::{Default, Kind};
use stella_runtime::{Setting, s};

pub const SERVICE_URL: Setting = s(
    "STELLA_CONSOLE_SERVICE_URL",
    Kind::Text,
    Default::Value("http://stella-{service}:{port}"),
    "How the console reaches each service for the Welcome wizard's versions and readiness: a URL \
                  template where {service} is the service name (api, orchestrator, ...) and {port} its port. \
                  The default fits the Compose quickstart; the chart sets its own Service names.",
);

pub const API_URL: Setting = s(
    "STELLA_CONSOLE_API_URL",
    Kind::Text,
    Default::Value("http://localhost:8081"),
    "The API URL as users reach it (stella-api), shown in the copyable curl and CLI lines.",
);

pub const CLI_IMAGE: Setting = s(
    "STELLA_CONSOLE_CLI_IMAGE",
    Kind::Text,
    Default::Value("registry.stella-ops.org/stella/stella-cli"),
    "The stella-cli image the copyable CLI lines run when no local `stella` binary is installed \
                  (`cargo xtask deploy` pins it by digest).",
);

pub const DOCS_DIR: Setting = s(
    "STELLA_CONSOLE_DOCS",
    Kind::Text,
    Default::Value("/usr/share/stella/docs"),
    "Directory of the install docs (Markdown) the console serves offline at /docs; the Compose \
                  quickstart mounts deploy/compose/docs there.",
);

pub const TASK_RUNNER_URL: Setting = s(
    "STELLA_CONSOLE_TASK_RUNNER_URL",
    Kind::Text,
    Default::Value("http://localhost:8083"),
    "The task runner's URL as users reach it (stella-task-runner), for the copyable `stella pack` lines.",
);

pub const COOKIE_SECURE: Setting = s(
    "STELLA_CONSOLE_COOKIE_SECURE",
    Kind::OneOf(&["auto", "true", "false"]),
    Default::Value("auto"),
    "Mark the session cookie Secure (sent over HTTPS only): `true` behind any HTTPS ingress (the production \
                  chart's value), `auto` only when the request says `X-Forwarded-Proto: https`, `false` never.",
);

/// The console's own settings; it also declares the Authority's (`stella_core::authority::SETTINGS`),
/// since it signs users in and creates tokens through the same functions as the API.
pub const ALL: &[Setting] = &[SERVICE_URL, API_URL, TASK_RUNNER_URL, CLI_IMAGE, DOCS_DIR, COOKIE_SECURE];

/// The services whose version and readiness the wizard shows, with their ports: every server of
/// the workspace (a test compares this list with the binaries' own `describe`).
pub const SERVICES: &[(&str, u16)] = &[
    ("console", 8080),
    ("api", 8081),
    ("orchestrator", 8082),
    ("task-runner", 8083),
    ("conseiller", 8084),
    ("excitator", 8085),
    ("policy", 8086),
    ("ledger", 8087),
    ("export", 8088),
    ("notify", 8089),
    ("ai", 8090),
];

/// The settings, read once at start-up.
#[derive(Clone, Debug)]
pub struct Settings {
    pub service_url: String,
    pub api_url: String,
    pub task_runner_url: String,
    pub cli_image: String,
    pub docs_dir: std::path::PathBuf,
    pub quickstart: bool,
    pub version: &'static str,
    /// `STELLA_CONSOLE_COOKIE_SECURE`: `Some(always)`, or `None` for `auto`.
    pub cookie_secure: Option<bool>,
}

impl Settings {
    pub fn new(ctx: &stella_runtime::Context) -> Settings {
        let text = |s: &Setting| ctx.config.text(s.name).unwrap_or_default().trim_end_matches('/').to_string();
        Settings {
            service_url: text(&SERVICE_URL),
            api_url: text(&API_URL),
            task_runner_url: text(&TASK_RUNNER_URL),
            cli_image: text(&CLI_IMAGE),
            docs_dir: text(&DOCS_DIR).into(),
            quickstart: ctx.config.bool("STELLA_QUICKSTART_MODE"),
            version: ctx.build.version,
            cookie_secure: match ctx.config.text(COOKIE_SECURE.name) {
                Some("true") => Some(true),
                Some("false") => Some(false),
                _ => None,
            },
        }
    }

    /// Where the console reaches `service`.
    pub fn url_of(&self, service: &str, port: u16) -> String {
        self.service_url.replace("{service}", service).replace("{port}", &port.to_string())
    }

    /// The `stella` command line, through the container image (`docker run`, with the current
    /// directory mounted so that files given by name are found) or a local binary.
    pub fn cli(&self, local: bool, args: &str) -> String {
        let urls = if args.starts_with("pack ") {
            format!("--url {} --task-runner-url {}", self.api_url, self.task_runner_url)
        } else {
            format!("--url {}", self.api_url)
        };
        if local {
            format!("stella {urls} {args}")
        } else {
            format!(
                "docker run --rm --network host -v \"$PWD:/work\" -w /work -e STELLA_TOKEN {} {urls} {args}",
                self.cli_image
            )
        }
    }
}
