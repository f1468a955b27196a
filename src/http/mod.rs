//! The HTTP server (hyper 1.x): `/metrics`, `/healthz`, `/readyz`, and later the API.
//!
//! It talks to the rest of the program only through the handles in [`HttpState`];
//! it never reaches into sources, detection or actions.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::{ComponentHandle, Readiness};
use crate::telemetry::{self, Metrics};

/// A client that has not sent its request headers by then is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers can see of the rest of the program.
pub struct HttpState {
    pub metrics: Metrics,
    pub readiness: Readiness,
}

type Body = Full<Bytes>;

/// Serves on `listener` until `shutdown` fires, then stops accepting and waits for
/// in-flight connections to finish (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    shutdown: CancellationToken,
    component: ComponentHandle,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    component.ready();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let state = state.clone();
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(route(&state, &request)) }
                    });
                    let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(err) = connection.await {
                            tracing::debug!(error = %err, "http connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %err, "accepting an http connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = shutdown.cancelled() => break,
        }
    }
    drop(listener);
    component.not_ready("shutting down");
    graceful.shutdown().await;
}

fn route(state: &HttpState, request: &Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    let allowed = match path {
        "/metrics" | "/healthz" | "/readyz" => "GET",
        _ => return error(StatusCode::NOT_FOUND, &format!("no route for {path}")),
    };
    if request.method() != Method::GET {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} accepts {allowed} only"),
        );
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET"));
        return response;
    }
    match path {
        "/metrics" => match state.metrics.render() {
            Ok(text) => respond(StatusCode::OK, telemetry::CONTENT_TYPE, text),
            Err(err) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("rendering metrics failed: {err}"),
            ),
        },
        "/healthz" => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        _ => {
            let report = state.readiness.report();
            let status = if report.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &report)
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    let text = serde_json::to_string(body)
        .unwrap_or_else(|err| format!("{{\"error\":\"serializing the response failed: {err}\"}}"));
    respond(status, "application/json", text)
}

/// Every error is JSON with a message.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}
