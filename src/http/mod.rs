//! The HTTP server (hyper 1.x): `/metrics`, `/healthz`, `/readyz` and the API
//! (`POST /api/v1/deploys`, `GET /api/v1/incidents[/ID]`).
//!
//! It talks to the rest of the program only through the handles in [`HttpState`];
//! it never reaches into sources, detection or actions. It never logs or answers
//! with the API token or a request's `Authorization` header.

pub mod api;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{
    ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::api::Access;
use crate::config::Secret;
use crate::event::{Deploy, DeployOrigin, Event, Payload};
use crate::health::{ComponentHandle, Readiness};
use crate::incidents::{self, Book};
use crate::telemetry::{self, Metrics};

/// A client that has not sent its request headers by then is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A client that has not sent its whole body by then is answered 408.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an announced deploy may wait for room in a full event queue before
/// the announcer is told to retry (503).
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// What the handlers can see of the rest of the program.
pub struct HttpState {
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// The incidents the daemon knows, for `GET /api/v1/incidents`.
    pub incidents: Book,
    /// Where announced deploys go: the daemon's event queue, beside the sources.
    pub deploys: mpsc::Sender<Event>,
    /// The bearer token of the mutating endpoints; none turns them off (403).
    pub api_token: Option<Secret>,
    /// Where requests to change an incident go: the detection task.
    pub commands: mpsc::Sender<incidents::Command>,
    /// The local vault, for `GET /api/v1/snapshots`; `None` when it cannot be opened.
    pub vault: Option<crate::vault::Vault>,
    /// The server listens on a loopback address only: without `api_token`, the
    /// mutating endpoints are then open to local callers (as a sidecar's
    /// neighbours in the pod), and refused otherwise.
    pub loopback: bool,
}

type Body = Full<Bytes>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
                        async move { Ok::<_, Infallible>(route(&state, request).await) }
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

/// A path the server knows, with the one method it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Metrics,
    Healthz,
    Readyz,
    Deploys,
    Incidents,
    Incident(&'a str),
    Dismiss(&'a str),
    Restore(&'a str),
    Snapshots,
}

impl<'a> Route<'a> {
    fn find(path: &'a str) -> Option<Self> {
        Some(match path {
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/api/v1/deploys" => Route::Deploys,
            "/api/v1/incidents" => Route::Incidents,
            "/api/v1/snapshots" => Route::Snapshots,
            _ => {
                // Still percent-encoded: `..%2F..` stays one segment, and is then
                // refused as an id, never used as a path.
                let rest = path.strip_prefix("/api/v1/incidents/")?;
                match rest.split_once('/') {
                    None => Route::Incident(rest),
                    Some((id, "dismiss")) if !id.is_empty() => Route::Dismiss(id),
                    Some((id, "restore")) if !id.is_empty() => Route::Restore(id),
                    Some(_) => return None,
                }
            }
        })
    }

    /// The one method it answers (a GET route answers HEAD too, as GET
    /// without the body: load balancers check health with HEAD).
    fn method(self) -> &'static str {
        match self {
            Route::Deploys | Route::Dismiss(_) | Route::Restore(_) => "POST",
            _ => "GET",
        }
    }

    /// What `Allow` names.
    fn allow(self) -> &'static str {
        match self.method() {
            "GET" => "GET, HEAD",
            other => other,
        }
    }

    /// A read of the API (`GET /api/v1/…`): incidents carry log samples, so off
    /// loopback it needs the bearer token like the mutating routes.
    fn reads_api(self) -> bool {
        matches!(
            self,
            Route::Incidents | Route::Incident(_) | Route::Snapshots
        )
    }
}

async fn route<B>(state: &HttpState, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let path = request.uri().path().to_owned();
    let Some(route) = Route::find(&path) else {
        return error(StatusCode::NOT_FOUND, &format!("no route for {path}"));
    };
    let allowed = route.method();
    let head = request.method() == hyper::Method::HEAD && allowed == "GET";
    if request.method().as_str() != allowed && !head {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} accepts {} only", route.allow()),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(route.allow()));
        return response;
    }
    if route.reads_api()
        && !state.loopback
        && let Some(refused) = refuse_unauthorized(state, request.headers(), "a read of the API")
    {
        return if head { without_body(refused) } else { refused };
    }
    let response = answer(state, route, request).await;
    if head {
        without_body(response)
    } else {
        response
    }
}

/// The answer to a GET as HEAD gets it: the same status and headers, with
/// the length of the body it leaves out.
fn without_body(response: Response<Body>) -> Response<Body> {
    use hyper::body::Body as _;
    let length = response.body().size_hint().exact().unwrap_or(0);
    let (mut parts, _) = response.into_parts();
    parts
        .headers
        .insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(length));
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// The answer of a route whose method was checked.
async fn answer<B>(state: &HttpState, route: Route<'_>, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match route {
        Route::Metrics => match state.metrics.render() {
            Ok(text) => respond(StatusCode::OK, telemetry::CONTENT_TYPE, text),
            Err(err) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("rendering metrics failed: {err}"),
            ),
        },
        Route::Healthz => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        Route::Readyz => {
            let report = state.readiness.report();
            let status = if report.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &report)
        }
        Route::Deploys => announce_deploy(state, request).await,
        Route::Dismiss(id) => act(state, request, id, Act::Dismiss).await,
        Route::Restore(id) => act(state, request, id, Act::Restore).await,
        Route::Incidents => json(StatusCode::OK, &state.incidents.list()),
        Route::Snapshots => snapshots(state).await,
        Route::Incident(id) => match incidents::canonical_id(id) {
            Err(err) => error(StatusCode::BAD_REQUEST, &err.to_string()),
            Ok(id) => match state.incidents.get(&id) {
                Some(incident) => json(StatusCode::OK, &incident),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("no incident {id}; GET /api/v1/incidents lists them"),
                ),
            },
        },
    }
}

/// `POST /api/v1/deploys`: the token first (an unauthenticated body is never
/// read), then the body, then the event into the daemon's queue.
async fn announce_deploy<B>(state: &HttpState, request: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if let Some(refused) = refuse_unauthorized(state, request.headers(), "a deploy announcement") {
        return refused;
    }
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let announcement = match crate::announce::parse_deploy(&body) {
        Ok(announcement) => announcement,
        Err(err) => return error(StatusCode::BAD_REQUEST, &err.to_string()),
    };
    let migrations = announcement.migrations.clone();
    let release = announcement.release.clone();
    let event = Event {
        source: "api".into(),
        observed_at: SystemTime::now(),
        logged_at: announcement.at,
        written_by: None,
        payload: Payload::Deploy(Deploy {
            migrations: announcement.migrations,
            origin: DeployOrigin::Api,
            release: announcement.release,
        }),
    };
    match tokio::time::timeout(QUEUE_WAIT, state.deploys.send(event)).await {
        Ok(Ok(())) => {
            tracing::info!(?migrations, ?release, "deploy announced over the API");
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "accepted": true, "migrations": migrations }),
            )
        }
        Ok(Err(_closed)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down: no more deploys are taken",
        ),
        Err(_elapsed) => {
            tracing::warn!(
                ?migrations,
                "deploy announcement refused: the event queue stayed full"
            );
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the event queue stayed full for {} s; announce the deploy again shortly",
                    QUEUE_WAIT.as_secs()
                ),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

/// `GET /api/v1/snapshots`: the vault's snapshots, oldest first, as
/// `dropguard snapshots list --json` shows them.
async fn snapshots(state: &HttpState) -> Response<Body> {
    let Some(vault) = state.vault.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the vault could not be opened at start; the daemon's log says why",
        );
    };
    match tokio::task::spawn_blocking(move || vault.list()).await {
        Ok(Ok(entries)) => {
            let listing: Vec<serde_json::Value> = entries.iter().map(|e| e.listing()).collect();
            json(StatusCode::OK, &listing)
        }
        Ok(Err(err)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("listing the vault failed: {err}"),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "listing the vault failed",
        ),
    }
}

/// The answer to a request without the right bearer token, if it lacks one.
fn refuse_unauthorized(
    state: &HttpState,
    headers: &hyper::HeaderMap,
    what: &str,
) -> Option<Response<Body>> {
    let header = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    match api::authorize(header, state.api_token.as_ref().map(Secret::expose)) {
        Access::Granted => None,
        Access::NoTokenConfigured if state.loopback => None,
        Access::NoTokenConfigured => Some(error(
            StatusCode::FORBIDDEN,
            "the API is off on a non-loopback address without a token (incidents carry log samples; its other endpoints change incidents): set server.api_token in the configuration",
        )),
        Access::Denied => {
            tracing::warn!(
                request = what,
                "refused a request without the right bearer token"
            );
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send Authorization: Bearer <server.api_token>",
            );
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(response)
        }
    }
}

/// What a person asks of an incident over the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Dismiss,
    /// The approval of a restore: the rollback command, then the data.
    Restore,
}

/// `POST /api/v1/incidents/ID/dismiss` and `…/restore`: the token, the id, the
/// body (`{"force": true}` may come with a restore), then the detection task
/// acts and answers with the incident as it now stands. A restore runs on after
/// the answer (202); GET the incident to follow its steps.
async fn act<B>(state: &HttpState, request: Request<B>, id: &str, act: Act) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let what = match act {
        Act::Dismiss => "a dismissal",
        Act::Restore => "a restore approval",
    };
    if let Some(refused) = refuse_unauthorized(state, request.headers(), what) {
        return refused;
    }
    let id = match incidents::canonical_id(id) {
        Ok(id) => id,
        Err(err) => return error(StatusCode::BAD_REQUEST, &err.to_string()),
    };
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let command = match act {
        Act::Dismiss => incidents::Command::Dismiss {
            id: id.clone(),
            reply,
        },
        Act::Restore => match api::parse_restore(&body) {
            Ok(force) => incidents::Command::Restore {
                id: id.clone(),
                force,
                by: "api".to_string(),
                reply,
            },
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        },
    };
    let asked = tokio::time::timeout(QUEUE_WAIT, state.commands.send(command)).await;
    if !matches!(asked, Ok(Ok(()))) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is busy or shutting down; try again shortly",
        );
    }
    match tokio::time::timeout(QUEUE_WAIT, answer).await {
        Ok(Ok(Ok(incident))) => {
            match act {
                Act::Dismiss => tracing::info!(incident = %id, "incident dismissed over the API"),
                Act::Restore => tracing::info!(incident = %id, "restore approved over the API"),
            }
            let status = match act {
                Act::Dismiss => StatusCode::OK,
                Act::Restore => StatusCode::ACCEPTED,
            };
            json(status, &incident)
        }
        Ok(Ok(Err(refusal))) => {
            let (status, message) = match refusal {
                incidents::Refusal::Unknown => (
                    StatusCode::NOT_FOUND,
                    format!("no incident {id}; GET /api/v1/incidents lists them"),
                ),
                incidents::Refusal::Final(state) => (
                    StatusCode::CONFLICT,
                    format!("incident {id} is already {}", state.as_str()),
                ),
                incidents::Refusal::Manual => (
                    StatusCode::CONFLICT,
                    "restore.mode is manual: dropguard runs no rollback; run the commands the incident names (its rollback command, then `dropguard restore --snapshot ID`), or set restore.mode = \"approve\"".to_string(),
                ),
                incidents::Refusal::Running => (
                    StatusCode::CONFLICT,
                    format!("the restore of incident {id} is already running; GET the incident to follow its steps"),
                ),
                incidents::Refusal::Cannot(why) => (
                    StatusCode::CONFLICT,
                    format!("incident {id} cannot be restored by dropguard: {why}"),
                ),
            };
            error(status, &message)
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon did not answer in time; GET the incident to see where it stands",
        ),
    }
}

/// The whole body, at most [`api::MAX_BODY_BYTES`], within [`BODY_READ_TIMEOUT`];
/// never more is buffered.
async fn read_body<B>(body: B) -> Result<Bytes, Response<Body>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is over {} KiB", api::MAX_BODY_BYTES / 1024),
        )
    };
    let limit = api::MAX_BODY_BYTES;
    // A Content-Length over the limit is refused before anything is read.
    if usize::try_from(body.size_hint().lower()).map_or(true, |len| len > limit) {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(err)) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("reading the body failed: {err}"),
        )),
        Err(_elapsed) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    use crate::detect::incident::Incident;

    const TOKEN: &str = "t0ken-for-tests";
    const ID: &str = "01JDQ2Z7X3M4N5P6Q7R8S9T0VW";

    fn fixture(queue: usize) -> (HttpState, mpsc::Receiver<Event>) {
        let (deploys, received) = mpsc::channel(queue);
        let incident: Incident = serde_json::from_value(serde_json::json!({
            "id": ID,
            "state": "alerted",
            "environment": "test",
            "opened_at": "2026-11-25T16:22:38Z",
            "updated_at": "2026-11-25T16:23:00Z",
            "headline": "errors on catalog_item.legacy_code after catalog.0003_retire",
            "triggers": ["errors"],
            "deploy": {
                "at": "2026-11-25T16:20:00Z",
                "origins": ["api"],
                "migrations": [{ "migration": "catalog.0003_retire", "destructive": true }]
            },
            "errors": 7,
            "objects": [],
            "samples": [],
            "history": []
        }))
        .unwrap();
        let state = HttpState {
            metrics: Metrics::new().unwrap(),
            readiness: Readiness::default(),
            incidents: Book::new(vec![incident]),
            deploys,
            api_token: Some(Secret::new(TOKEN)),
            commands: mpsc::channel(1).0,
            vault: None,
            loopback: false,
        };
        (state, received)
    }

    async fn call(
        state: &HttpState,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: impl Into<Bytes>,
    ) -> (StatusCode, hyper::HeaderMap, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let response = route(state, request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|err| panic!("{status}: not JSON ({err}): {body:?}"));
        (status, headers, json)
    }

    async fn announce(
        state: &HttpState,
        body: impl Into<Bytes>,
    ) -> (StatusCode, serde_json::Value) {
        let (status, _, json) =
            call(state, Method::POST, "/api/v1/deploys", Some(TOKEN), body).await;
        (status, json)
    }

    #[tokio::test]
    async fn an_announced_deploy_becomes_a_deploy_event_from_the_api() {
        let (state, mut received) = fixture(8);
        let (status, json) = announce(
            &state,
            r#"{"migrations": ["catalog.0003_retire"], "release": "v1.2.3", "at": "2026-11-25T16:22:38Z"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        assert_eq!(
            json,
            serde_json::json!({ "accepted": true, "migrations": ["catalog.0003_retire"] })
        );
        let event = received.try_recv().unwrap();
        assert_eq!(&*event.source, "api");
        let logged = event.logged_at.unwrap();
        assert_eq!(
            logged
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_795_623_758
        );
        assert_eq!(
            event.payload,
            Payload::Deploy(Deploy {
                migrations: vec!["catalog.0003_retire".into()],
                origin: DeployOrigin::Api,
                release: Some("v1.2.3".into()),
            })
        );
    }

    #[tokio::test]
    async fn the_token_is_checked_before_the_body_and_never_echoed() {
        let (state, mut received) = fixture(8);
        for token in [None, Some("wrong")] {
            let (status, headers, json) = call(
                &state,
                Method::POST,
                "/api/v1/deploys",
                token,
                "not even JSON",
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
            assert_eq!(headers[WWW_AUTHENTICATE], "Bearer");
            assert!(!json.to_string().contains(TOKEN));
        }
        let (off, _) = fixture(8);
        let off = HttpState {
            api_token: None,
            ..off
        };
        let (status, _, json) =
            call(&off, Method::POST, "/api/v1/deploys", Some(TOKEN), "{}").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(json["error"].as_str().unwrap().contains("server.api_token"));
        assert!(received.try_recv().is_err(), "nothing was announced");
    }

    #[tokio::test]
    async fn bodies_up_to_64_kib_are_read_and_larger_ones_refused() {
        let (state, _received) = fixture(8);
        let prefix = r#"{"migrations": ["catalog.0003_retire"], "release": ""#;
        let suffix = r#""}"#;
        let fill = api::MAX_BODY_BYTES - prefix.len() - suffix.len();
        let exact = format!("{prefix}{}{suffix}", "x".repeat(fill));
        assert_eq!(exact.len(), api::MAX_BODY_BYTES);
        let (status, json) = announce(&state, exact).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        let over = format!("{prefix}{}{suffix}", "x".repeat(fill + 1));
        let (status, json) = announce(&state, over).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
        assert!(json["error"].as_str().unwrap().contains("64 KiB"));
    }

    #[tokio::test]
    async fn a_body_without_a_length_is_cut_at_64_kib() {
        use futures_util::stream;
        use hyper::body::Frame;
        let (state, _received) = fixture(8);
        let chunk = Bytes::from(vec![b' '; 16 * 1024]);
        let frames = (0..5).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())));
        let body = http_body_util::StreamBody::new(stream::iter(frames));
        let request = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/deploys")
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(body)
            .unwrap();
        let response = route(&state, request).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_full_for_2_s_answers_503_and_a_closed_one_shutting_down() {
        let (state, received) = fixture(1);
        let body = r#"{"migrations": ["catalog.0003_retire"]}"#;
        assert_eq!(announce(&state, body).await.0, StatusCode::ACCEPTED);
        let started = tokio::time::Instant::now();
        let (status, headers, json) =
            call(&state, Method::POST, "/api/v1/deploys", Some(TOKEN), body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
        assert_eq!(headers[RETRY_AFTER], "5");
        assert!(started.elapsed() >= QUEUE_WAIT);
        drop(received);
        let (status, json) = announce(&state, body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            json["error"].as_str().unwrap().contains("shutting down"),
            "{json}"
        );
    }

    #[tokio::test]
    async fn incidents_are_listed_and_fetched_by_a_checked_id() {
        // On loopback: reads need no token there.
        let state = HttpState {
            loopback: true,
            ..fixture(8).0
        };
        let (status, _, json) = call(&state, Method::GET, "/api/v1/incidents", None, "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json[0]["id"], ID);
        let lower = format!("/api/v1/incidents/{}", ID.to_ascii_lowercase());
        let (status, _, json) = call(&state, Method::GET, &lower, None, "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json["errors"], 7);
        let unknown = "01JDQ2Z7X3M4N5P6Q7R8S9T0VX";
        let (status, _, json) = call(
            &state,
            Method::GET,
            &format!("/api/v1/incidents/{unknown}"),
            None,
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(json["error"].as_str().unwrap().contains(unknown), "{json}");
        for bad in ["..%2F..%2Fetc", "x", ""] {
            let (status, _, json) = call(
                &state,
                Method::GET,
                &format!("/api/v1/incidents/{bad}"),
                None,
                "",
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {json}");
        }
        let (status, _, _) = call(
            &state,
            Method::GET,
            &format!("/api/v1/incidents/{ID}/more"),
            None,
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn each_route_answers_its_method_and_names_it_otherwise() {
        let (state, _received) = fixture(8);
        for (path, wrong, allowed) in [
            ("/metrics", Method::POST, "GET, HEAD"),
            ("/healthz", Method::DELETE, "GET, HEAD"),
            ("/readyz", Method::PUT, "GET, HEAD"),
            ("/api/v1/deploys", Method::GET, "POST"),
            ("/api/v1/deploys", Method::HEAD, "POST"),
            ("/api/v1/incidents", Method::POST, "GET, HEAD"),
            (
                "/api/v1/incidents/01JDQ2Z7X3M4N5P6Q7R8S9T0VW",
                Method::DELETE,
                "GET, HEAD",
            ),
        ] {
            let (status, headers, json) = call(&state, wrong, path, Some(TOKEN), "").await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}: {json}");
            assert_eq!(headers[ALLOW], allowed, "{path}");
        }
        let (status, _, json) = call(&state, Method::GET, "/api/v2/incidents", None, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .contains("/api/v2/incidents")
        );
    }

    /// Issue 17, item 10: load balancers check health with HEAD.
    #[tokio::test]
    async fn head_answers_every_get_route_as_get_without_the_body() {
        let state = HttpState {
            loopback: true,
            ..fixture(8).0
        };
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/incidents",
            &format!("/api/v1/incidents/{ID}"),
        ] {
            let get = route(
                &state,
                Request::get(path).body(Full::new(Bytes::new())).unwrap(),
            )
            .await;
            let head = route(
                &state,
                Request::head(path).body(Full::new(Bytes::new())).unwrap(),
            )
            .await;
            assert_eq!(head.status(), get.status(), "{path}");
            assert_eq!(
                head.headers()[CONTENT_TYPE],
                get.headers()[CONTENT_TYPE],
                "{path}"
            );
            let length = get.into_body().collect().await.unwrap().to_bytes().len();
            assert!(length > 0, "{path}");
            assert_eq!(
                head.headers()[hyper::header::CONTENT_LENGTH],
                length.to_string().as_str(),
                "{path}: the length of the body left out"
            );
            let body = head.into_body().collect().await.unwrap().to_bytes();
            assert!(body.is_empty(), "{path}: {body:?}");
        }
    }

    /// Issue 17, item 10: incidents carry log samples; off loopback, reading
    /// them needs the token as changing them does. Health and metrics stay open.
    #[tokio::test]
    async fn reads_of_the_api_need_the_token_off_loopback_but_health_and_metrics_do_not() {
        let (state, _received) = fixture(8);
        assert!(!state.loopback);
        for path in [
            "/api/v1/incidents".to_string(),
            format!("/api/v1/incidents/{ID}"),
            "/api/v1/snapshots".to_string(),
        ] {
            for token in [None, Some("wrong")] {
                let (status, headers, json) = call(&state, Method::GET, &path, token, "").await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {token:?}: {json}");
                assert_eq!(headers[WWW_AUTHENTICATE], "Bearer");
                assert!(!json.to_string().contains(ID), "{path}: {json}");
            }
            let (status, _, json) = call(&state, Method::GET, &path, Some(TOKEN), "").await;
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{path}: {json}");
            assert_ne!(status, StatusCode::FORBIDDEN, "{path}: {json}");
        }
        let (status, _, json) =
            call(&state, Method::GET, "/api/v1/incidents", Some(TOKEN), "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json[0]["id"], ID);
        for path in ["/healthz", "/metrics", "/readyz"] {
            let response = route(
                &state,
                Request::get(path).body(Full::new(Bytes::new())).unwrap(),
            )
            .await;
            assert_ne!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        // Without a token configured, off loopback: refused, saying what to set.
        let off = HttpState {
            api_token: None,
            ..fixture(8).0
        };
        let (status, _, json) = call(&off, Method::GET, "/api/v1/incidents", None, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            json["error"].as_str().unwrap().contains("server.api_token"),
            "{json}"
        );
        // On loopback, as before: open.
        let local = HttpState {
            loopback: true,
            ..fixture(8).0
        };
        let (status, _, _) = call(&local, Method::GET, "/api/v1/incidents", None, "").await;
        assert_eq!(status, StatusCode::OK);
    }
}
