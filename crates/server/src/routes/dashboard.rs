//! The dashboard: the single-page app built from `web/` (`scripts/build-web`)
//! and committed as `web/dist`, embedded in the binary so `wiresocket serve`
//! on a fresh clone serves it with no build step of the user's.
//!
//! `/dashboard` and every path under it that is not a file of the build
//! answer `index.html` (the app routes in the browser: `/dashboard/apps`,
//! the mailed `/dashboard/accept-invite#token=…`). Hashed files under
//! `assets/` are immutable and cached for a year; a missing one is the JSON
//! 404, never the HTML shell (a stale page must fail loudly, not parse HTML
//! as script). The CSP is set for all of `/dashboard` by [`crate::headers`].

use crate::error::ApiError;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};

static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../web/dist");

/// Vite names every file under `assets/` by a hash of its content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The shell names the current hashes: always revalidate it.
const REVALIDATE: &str = "no-cache";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn file(path: &str, bytes: &'static [u8], cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type(path))),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        bytes,
    )
        .into_response()
}

fn index() -> Response {
    match DIST.get_file("index.html") {
        Some(f) => file("index.html", f.contents(), REVALIDATE),
        // Only a build without `web/dist/index.html` gets here; the test
        // suite's stale check keeps the committed build complete.
        None => ApiError::internal("the dashboard build has no index.html").into_response(),
    }
}

/// `GET /dashboard`.
pub async fn shell() -> Response {
    index()
}

/// `GET /dashboard/{*path}`: a file of the build, or the shell.
pub async fn asset(Path(path): Path<String>) -> Response {
    if path != "index.html"
        && !path.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        && let Some(f) = DIST.get_file(&path)
    {
        let cache = if path.starts_with("assets/") { IMMUTABLE } else { REVALIDATE };
        return file(&path, f.contents(), cache);
    }
    if path.starts_with("assets/") {
        return ApiError::not_found().into_response();
    }
    index()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_is_embedded_with_its_shell_and_assets() {
        assert!(DIST.get_file("index.html").is_some());
        let assets = DIST.get_dir("assets").map(|d| d.files().count()).unwrap_or(0);
        assert!(assets >= 2, "expected the script and the stylesheet under web/dist/assets");
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("assets/index-abc.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("assets/index-abc.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
