//! The install docs, served offline at `/docs`: the Markdown pages of `STELLA_CONSOLE_DOCS`
//! (the Compose quickstart mounts `deploy/compose/docs`, which `cargo xtask deploy` copies from
//! `docs/install`), rendered with `pulldown-cmark`. Links between pages stay inside the console.
//!
//! The docs are mounted rather than compiled in so that a documentation change does not change
//! every image digest (docs are not image inputs; see ARCHITECTURE.md).

use maud::html;
use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};
use stella_runtime::axum::extract::{Path, State};
use stella_runtime::axum::http::StatusCode;
use stella_runtime::axum::response::{IntoResponse, Response};

use crate::Console;
use crate::page::{self, Frame};

/// Page names: file stems of `*.md`, lower-case letters, digits and dashes only, so a name can
/// never leave the directory.
fn valid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `(name, title)` of every page, sorted by name.
fn pages(console: &Console) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(&console.settings.docs_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().strip_suffix(".md")?.to_string();
            valid(&name).then_some(name)
        })
        .map(|name| {
            let text =
                std::fs::read_to_string(console.settings.docs_dir.join(format!("{name}.md"))).unwrap_or_default();
            let (title, _) = split_title(&name, &text);
            (name, title)
        })
        .collect();
    out.sort();
    out
}

/// A page's title and the rest: the title is its first line when that is a `# ` heading (the
/// frame shows it as the page's h1); a page without one is shown whole under its file name.
fn split_title<'a>(name: &str, text: &'a str) -> (String, &'a str) {
    match text.split_once('\n').filter(|(first, _)| first.starts_with("# ")) {
        Some((first, rest)) => (first.trim_start_matches("# ").trim().to_string(), rest),
        None => (name.to_string(), text),
    }
}

/// No session needed: the install docs are public, and a user who cannot sign in needs them most.
pub async fn index(State(console): State<Console>) -> Response {
    let pages = pages(&console);
    let frame = Frame { settings: &console.settings, user: None, title: "Install docs" };
    let body = html! {
        @if pages.is_empty() {
            p class="error" { "No docs are mounted at " code { (console.settings.docs_dir.display()) }
                " (STELLA_CONSOLE_DOCS). They are in docs/install of the release." }
        }
        ul id="docs" { @for (name, title) in &pages { li { a href={ "/docs/" (name) } { (title) } } } }
    };
    page::render(&frame, body).into_response()
}

pub async fn page(State(console): State<Console>, Path(name): Path<String>) -> Response {
    let name = name.strip_suffix(".md").unwrap_or(&name).to_string();
    let text = if valid(&name) {
        std::fs::read_to_string(console.settings.docs_dir.join(format!("{name}.md"))).ok()
    } else {
        None
    };
    let Some(text) = text else {
        return page::error(&console.settings, StatusCode::NOT_FOUND, &format!("no install doc named `{name}`"));
    };
    let (title, body) = split_title(&name, &text);
    // Links: a sibling page stays in the console; an absolute URL is left as written; any other
    // relative link (`../api.md`) names a page the console does not serve, and any other scheme
    // is no place to go, so only its text is kept. `kept` remembers, for each open link,
    // whether its end tag is kept too.
    let mut kept: Vec<bool> = Vec::new();
    let parser = Parser::new_ext(body, Options::ENABLE_TABLES).filter_map(|event| match event {
        Event::Start(Tag::Link { link_type, dest_url, title, id }) => {
            let (path, fragment) = dest_url.split_once('#').unwrap_or((&dest_url, ""));
            let dest = if !path.contains('/') && path.ends_with(".md") {
                let hash = if fragment.is_empty() { String::new() } else { format!("#{fragment}") };
                Some(CowStr::from(format!("/docs/{}{hash}", path.trim_end_matches(".md"))))
            } else if ["http://", "https://", "#"].iter().any(|p| dest_url.starts_with(p)) {
                Some(dest_url.clone())
            } else {
                None
            };
            kept.push(dest.is_some());
            dest.map(|dest_url| Event::Start(Tag::Link { link_type, dest_url, title, id }))
        }
        Event::End(pulldown_cmark::TagEnd::Link) => kept.pop().unwrap_or(true).then_some(event),
        // Our own pages, but raw HTML would bypass the page's escaping: shown as text.
        Event::Html(h) | Event::InlineHtml(h) => Some(Event::Text(h)),
        other => Some(other),
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, parser);
    let frame = Frame { settings: &console.settings, user: None, title: &title };
    page::render(
        &frame,
        html! { article class="doc" { (page::trusted(html)) } p { a href="/docs" { "All install docs" } } },
    )
    .into_response()
}
