//! HTTP request latency by route, method and status:
//! `tidings_http_request_duration_seconds{route,method,status}`.
//!
//! `route` is the route template axum matched (`/v1/feeds/{user}/{kind}`), never the raw
//! path, so user ids and activity ids do not become label values; requests no route matched
//! count under `unmatched`. `method` is one of the standard methods or `other`. The time is
//! until the response head is ready: a `home:stream` counts its setup, not its lifetime.
//!
//! Non-goals: request and response sizes, per-user figures.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// The label of a method: bounded to the standard ones.
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The middleware (add it with `Router::layer` after every route is in place).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics::histogram!(
        "tidings_http_request_duration_seconds",
        "route" => route,
        "method" => method,
        "status" => resp.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;

    #[test]
    fn methods_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"PURGE").unwrap()),
            "other"
        );
    }

    #[test]
    fn routes_are_labelled_by_template_not_path() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let app = Router::new()
            .route("/v1/feeds/{user}/{kind}", get(|| async { "page" }))
            .layer(axum::middleware::from_fn(track));
        // Server and client on one current-thread runtime, inside the local recorder's scope.
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let client = async {
                    let http = reqwest::Client::new();
                    for path in ["/v1/feeds/17/home", "/v1/feeds/42/user", "/nowhere/9"] {
                        http.get(format!("http://{addr}{path}"))
                            .send()
                            .await
                            .unwrap();
                    }
                };
                tokio::select! {
                    _ = axum::serve(listener, app) => panic!("the server stopped"),
                    () = client => {}
                }
            });
        });
        let text = handle.render();
        assert!(
            text.contains(r#"tidings_http_request_duration_seconds_count{route="/v1/feeds/{user}/{kind}",method="GET",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tidings_http_request_duration_seconds_count{route="unmatched",method="GET",status="404"} 1"#),
            "{text}"
        );
        assert!(!text.contains("/v1/feeds/17"), "{text}");
    }
}
