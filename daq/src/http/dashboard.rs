//! The live dashboard: `GET /` and its scripts, served from the binary.
//!
//! A chemist watching a reactor looks before reading: the page draws the newest spectrum with
//! its peak and FWHM, feature trends per condition, the newest decay with its fit and
//! residuals, the phasor plot, plug flow, conditions with their outcomes and ingest health.
//! Every file (the page, its script and style, and uPlot, vendored from the npm registry) is
//! compiled in, so the page works on a lab network without internet. The files hold no data:
//! they are served without a token, and the page asks the guarded routes (`/sql`, `/events`,
//! `/metrics/json`) for data with the token the user gives it.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One compiled-in file: its route, content type and bytes.
struct Asset {
    route: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 5] = [
    Asset {
        route: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../assets/dashboard/index.html"),
    },
    Asset {
        route: "/dashboard/dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/dashboard/dashboard.js"),
    },
    Asset {
        route: "/dashboard/dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/dashboard/dashboard.css"),
    },
    Asset {
        route: "/dashboard/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../assets/dashboard/vendor/uPlot.iife.min.js"),
    },
    Asset {
        route: "/dashboard/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/dashboard/vendor/uPlot.min.css"),
    },
];

/// What the page may load and connect to: this server only.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'";

/// The dashboard's routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let (content_type, body) = (asset.content_type, asset.body);
        router.route(
            asset.route,
            get(move || async move { serve(content_type, body) }),
        )
    })
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_compiled_in_files() {
        let page = ASSETS[0].body;
        for reference in page
            .split(['"', '\''])
            .filter(|s| s.starts_with('/') || s.starts_with("http"))
        {
            assert!(
                ASSETS.iter().any(|a| a.route == reference),
                "the page refers to {reference}, which is not served"
            );
        }
        assert!(!page.contains("//cdn") && !page.contains("https://"));
    }
}
