//! `POST /v1/admin/pipeline`: replaces the processor chain from a config file sent as the body
//! (TOML, the same file `--config` reads; only `[pipeline]` takes effect). Served by `up` and
//! `consume --listen` behind the admin API's token guard ([`crate::ops::admin`]: **401**
//! without the right `Authorization: Bearer` token, **403** when no token is configured).
//!
//! Answers: **200** `{version, processors: [[id, kind]…], side_topics}` once swapped in (the
//! consumers use it from their next batch); **400** `{error}` when the file does not parse or
//! validate (nothing changes; the error names the processor and what to fix).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use crate::chain::Reloader;

/// The route, to merge under the admin API's guard ([`crate::ops::app`]'s `admin_extra`).
pub fn router(reloader: Reloader) -> Router {
    Router::new()
        .route("/v1/admin/pipeline", post(reload))
        .with_state(reloader)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

async fn reload(State(reloader): State<Reloader>, body: String) -> Response {
    match tokio::task::spawn_blocking(move || reloader.reload_from_toml(&body)).await {
        Ok(Ok(summary)) => {
            tracing::info!(?summary, "processor chain replaced through the admin API");
            (StatusCode::OK, Json(summary)).into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::BAD_REQUEST,
            format!("{e}; the running chain is unchanged"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the reload did not finish: {e}; the running chain is unchanged"),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ops::admin::guarded;
    use tidings_consumers::chain::ChainHandle;

    #[test]
    fn posting_a_config_swaps_the_chain_and_a_bad_one_changes_nothing() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = ChainHandle::default();
        let app = guarded(
            router(Reloader::new(handle.clone(), None)),
            Some("s3cret".into()),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!(
            "http://{}/v1/admin/pipeline",
            listener.local_addr().unwrap()
        );
        rt.spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let post = |token: Option<&str>, body: &str| {
            let mut req = http.post(&url).body(body.to_string());
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            rt.block_on(async {
                let r = req.send().await.unwrap();
                (
                    r.status().as_u16(),
                    r.json::<serde_json::Value>().await.unwrap(),
                )
            })
        };
        let good = "[[pipeline.processor]]\nid = \"d\"\nkind = \"dedupe\"\nwindow_ms = 5000\n";

        let (status, body) = post(None, good);
        assert_eq!(status, 401, "{body}");
        let (status, _) = post(Some("wrong"), good);
        assert_eq!(status, 401);
        assert_eq!(handle.current().1, 1);

        let (status, body) = post(Some("s3cret"), good);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"], 2);
        // The auth scheme is case-insensitive.
        let lower = rt.block_on(async {
            http.post(&url)
                .header("authorization", "bearer s3cret")
                .body(good.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        assert_eq!(lower, 200);
        assert_eq!(handle.current().1, 3);
        assert_eq!(body["processors"], serde_json::json!([["d", "dedupe"]]));
        assert_eq!(handle.current().0.len(), 1);

        let (status, body) = post(
            Some("s3cret"),
            "[[pipeline.processor]]\nid = \"d\"\nkind = \"dedupe\"\nwindow_ms = -1\n",
        );
        assert_eq!(status, 400, "{body}");
        let e = body["error"].as_str().unwrap();
        assert!(
            e.contains("processor `d`: window_ms must be positive"),
            "{e}"
        );
        assert!(e.contains("running chain is unchanged"), "{e}");
        assert_eq!(handle.current().1, 3);
    }

    #[test]
    fn without_a_token_the_route_is_off() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!(
            "http://{}/v1/admin/pipeline",
            listener.local_addr().unwrap()
        );
        rt.spawn(async move {
            axum::serve(
                listener,
                guarded(router(Reloader::new(ChainHandle::default(), None)), None),
            )
            .await
        });
        let (status, body) = rt.block_on(async {
            let r = reqwest::Client::new()
                .post(&url)
                .header("authorization", "Bearer x")
                .body("")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        });
        assert_eq!(status, 403);
        assert!(body.contains("TIDINGS_ADMIN_TOKEN"), "{body}");
    }
}
