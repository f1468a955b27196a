//! The alert outbox and its sender against real HTTP receivers on loopback: a
//! small HTTP/1.1 server whose answers each test scripts (500s, 429 with
//! `Retry-After`, a hang, a 400), and the outbox directory read back.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dropguard::actions::alerts::{self, Alerts, Links, Outbox, Timing};
use dropguard::config::{AlertsConfig, SecretUrl, SlackConfig, WebhookConfig};
use dropguard::detect::incident::Incident;
use dropguard::telemetry::Metrics;
use tokio_util::sync::CancellationToken;

/// How the receiver answers one request.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Hold the connection this long without answering, then close it.
    pub hang: Option<Duration>,
    /// Answer, but only after this long: a slow receiver.
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            hang: None,
            delay: None,
        }
    }
}

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: String,
    /// The status answered; `None` when it hung up without one.
    pub answered: Option<u16>,
}

type Script = dyn Fn(usize) -> Reply + Send + Sync;

/// An HTTP receiver on 127.0.0.1 answering request N (from 0) as `script(N)`.
pub struct Receiver {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    pub fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on(0, script)
    }

    /// On a given port (0 for any): a receiver that comes up where a sender
    /// was refused before.
    pub fn start_on(port: u16, script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding the receiver");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let count = Arc::new(AtomicUsize::new(0));
        let recorded = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (script, count, recorded) = (script.clone(), count.clone(), recorded.clone());
                std::thread::spawn(move || serve(stream, &*script, &count, &recorded));
            }
        });
        Self { port, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests it answered with a 2xx.
    pub fn accepted(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.answered.is_some_and(|code| (200..300).contains(&code)))
            .collect()
    }
}

fn serve(mut stream: TcpStream, script: &Script, count: &AtomicUsize, seen: &Mutex<Vec<Seen>>) {
    let at = Instant::now();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let reply = script(count.fetch_add(1, Ordering::SeqCst));
    let path = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    seen.lock().unwrap().push(Seen {
        at,
        path,
        idempotency_key: header("idempotency-key"),
        body: String::from_utf8_lossy(&buffer[head_end..head_end + length]).to_string(),
        answered: reply.hang.is_none().then_some(reply.status),
    });
    if let Some(hang) = reply.hang {
        std::thread::sleep(hang);
        return;
    }
    if let Some(delay) = reply.delay {
        std::thread::sleep(delay);
    }
    let mut response = format!(
        "HTTP/1.1 {} X\r\nContent-Length: 2\r\nConnection: close\r\n",
        reply.status
    );
    for (name, value) in &reply.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\nok");
    let _ = stream.write_all(response.as_bytes());
}

/// Short waits, so retries happen in milliseconds.
fn fast() -> Timing {
    Timing {
        request_timeout: Duration::from_millis(300),
        first_retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
        outbox_error_wait: Duration::from_millis(50),
    }
}

fn webhook(url: &str) -> AlertsConfig {
    AlertsConfig {
        webhook: vec![WebhookConfig {
            url: SecretUrl::new(url),
        }],
        ..AlertsConfig::default()
    }
}

fn outbox_to(config: &AlertsConfig, state: &Path) -> (Alerts, Metrics) {
    let metrics = Metrics::new().unwrap();
    let alerts = Alerts::new(
        Outbox::new(state),
        alerts::receivers(config),
        Links {
            api_base: "http://127.0.0.1:9187".into(),
        },
        metrics.alerts().unwrap(),
    );
    (alerts, metrics)
}

/// An opened incident, as the detector would hand it on.
pub fn incident() -> Incident {
    let now = chrono::Utc::now();
    serde_json::from_value(serde_json::json!({
        "id": dropguard::incidents::new_id(SystemTime::now()),
        "state": "open",
        "environment": "test",
        "opened_at": now,
        "updated_at": now,
        "headline": "5 errors on catalog_product.brand_code after catalog.0016_remove_product_brand dropped it",
        "triggers": ["errors"],
        "deploy": {"at": now, "origins": ["api"], "migrations": [{
            "migration": "catalog.0016_remove_product_brand",
            "previous": "0015_delete_digitalproduct",
            "rollback_command": "python manage.py migrate catalog 0015_delete_digitalproduct",
            "destructive": true,
            "snapshot": {"id": "01JDQZ0000SNAPSHOT00000000", "rows": 3},
            "objects": [{"table": "catalog_product", "columns": ["brand_code"], "change": "dropped",
                         "migration": "catalog.0016_remove_product_brand"}]
        }]},
        "errors": 5,
        "objects": [{"table": "catalog_product", "column": "brand_code", "change": "dropped",
                     "migration": "catalog.0016_remove_product_brand", "errors": 5,
                     "first_seen": now, "last_seen": now, "sources": ["app.log"]}],
        "samples": [{"at": now, "source": "app.log", "text": "no such column: catalog_product.brand_code"}],
        "history": [{"at": now, "state": "open", "note": "5 errors within 60s"}]
    }))
    .expect("an incident")
}

/// The value of one series (0 when absent).
fn metric(metrics: &Metrics, series: &str) -> f64 {
    metrics
        .render()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a sender until the returned token is cancelled.
fn start(alerts: &Alerts, timing: Timing) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (alerts, stop) = (alerts.clone(), stop.clone());
        async move { alerts::run(alerts, timing, stop).await.unwrap() }
    });
    (stop, task)
}

#[tokio::test]
async fn a_receiver_failing_five_times_then_accepting_gets_the_message_once() {
    let receiver = Receiver::start(|n| Reply::status(if n < 5 { 500 } else { 200 }));
    let state = tempfile::tempdir().unwrap();
    let (alerts, metrics) = outbox_to(&webhook(&receiver.url("/hook")), state.path());
    let incident = incident();
    assert_eq!(alerts.enqueue(alerts::Event::Opened, &incident).unwrap(), 1);
    let (stop, task) = start(&alerts, fast());
    wait_until("the delivery", Duration::from_secs(10), || {
        !alerts.outbox().delivered_keys().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    task.await.unwrap();

    let seen = receiver.seen();
    assert_eq!(seen.len(), 6, "five failures and one success: {seen:#?}");
    assert_eq!(receiver.accepted().len(), 1);
    let key = format!("{}-opened-webhook0", incident.id);
    assert!(
        seen.iter()
            .all(|s| s.idempotency_key.as_deref() == Some(key.as_str()))
    );
    let body: serde_json::Value = serde_json::from_str(&seen[5].body).unwrap();
    assert_eq!(body["event"], "incident.opened");
    assert_eq!(body["incident"]["id"], incident.id.as_str());
    assert_eq!(alerts.outbox().delivered_keys().unwrap(), [key]);
    assert!(alerts.outbox().pending().unwrap().is_empty());
    let sent = r#"dropguard_alerts_sent_total{receiver="webhook[0]"}"#;
    let retried = r#"dropguard_alerts_failed_total{reason="retry",receiver="webhook[0]"}"#;
    assert_eq!(metric(&metrics, sent), 1.0);
    assert_eq!(metric(&metrics, retried), 5.0);
    assert_eq!(metric(&metrics, "dropguard_alert_outbox_depth"), 0.0);
    assert_eq!(
        metric(&metrics, "dropguard_alert_delivery_seconds_count"),
        1.0
    );

    // The same state change reported again is not queued again.
    alerts.enqueue(alerts::Event::Opened, &incident).unwrap();
    assert!(alerts.outbox().pending().unwrap().is_empty());
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let receiver = Receiver::start(|n| {
        if n == 0 {
            Reply {
                headers: vec![("Retry-After", "1".into())],
                ..Reply::status(429)
            }
        } else {
            Reply::status(200)
        }
    });
    let state = tempfile::tempdir().unwrap();
    let (alerts, _metrics) = outbox_to(&webhook(&receiver.url("/hook")), state.path());
    alerts.enqueue(alerts::Event::Opened, &incident()).unwrap();
    let (stop, task) = start(&alerts, fast());
    wait_until("the delivery", Duration::from_secs(10), || {
        receiver.accepted().len() == 1
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let waited = seen[1].at - seen[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "retried after {waited:?}, before Retry-After: 1"
    );
}

#[tokio::test]
async fn a_receiver_that_hangs_is_timed_out_and_tried_again() {
    let receiver = Receiver::start(|n| {
        if n == 0 {
            Reply {
                hang: Some(Duration::from_secs(3)),
                ..Reply::status(200)
            }
        } else {
            Reply::status(200)
        }
    });
    let state = tempfile::tempdir().unwrap();
    let (alerts, metrics) = outbox_to(&webhook(&receiver.url("/hook")), state.path());
    alerts.enqueue(alerts::Event::Opened, &incident()).unwrap();
    let started = Instant::now();
    let (stop, task) = start(&alerts, fast());
    wait_until("the delivery", Duration::from_secs(10), || {
        receiver.accepted().len() == 1
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited for the hung request to end instead of timing it out"
    );
    let seen = receiver.seen();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(300));
    let retried = r#"dropguard_alerts_failed_total{reason="retry",receiver="webhook[0]"}"#;
    assert_eq!(metric(&metrics, retried), 1.0);
}

#[tokio::test]
async fn a_400_is_dead_lettered_counted_and_never_retried() {
    let receiver = Receiver::start(|_| Reply::status(400));
    let state = tempfile::tempdir().unwrap();
    let secret = "T0001/B0002/SECRETPATH";
    let config = AlertsConfig {
        slack: Some(SlackConfig {
            webhook_url: SecretUrl::new(receiver.url(&format!("/services/{secret}"))),
        }),
        ..AlertsConfig::default()
    };
    let (alerts, metrics) = outbox_to(&config, state.path());
    let incident = incident();
    alerts.enqueue(alerts::Event::Opened, &incident).unwrap();
    let (stop, task) = start(&alerts, fast());
    wait_until("the dead letter", Duration::from_secs(10), || {
        !alerts.outbox().dead_keys().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    task.await.unwrap();

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "a 400 is not retried: {seen:#?}");
    assert_eq!(seen[0].path, format!("/services/{secret}"));
    let key = format!("{}-opened-slack", incident.id);
    assert_eq!(alerts.outbox().dead_keys().unwrap(), [key]);
    assert!(alerts.outbox().pending().unwrap().is_empty());
    let dead = r#"dropguard_alerts_failed_total{reason="dead",receiver="slack"}"#;
    assert_eq!(metric(&metrics, dead), 1.0);
    assert_eq!(
        metric(&metrics, r#"dropguard_alerts_sent_total{receiver="slack"}"#),
        0.0
    );
    // The webhook's path is its credential: not on disk, not in the metrics.
    assert!(!metrics.render().unwrap().contains("SECRETPATH"));
    for entry in walk(state.path()) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(
            !text.contains("SECRETPATH"),
            "{} names the URL",
            entry.display()
        );
    }
    // The Slack message itself went out as built.
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert!(body["text"].is_string() && body["blocks"].is_array());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn a_sender_stopped_with_messages_pending_delivers_each_once_after_a_restart() {
    let accepting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = Receiver::start({
        let accepting = accepting.clone();
        move |_| {
            Reply::status(if accepting.load(Ordering::SeqCst) {
                200
            } else {
                503
            })
        }
    });
    let state = tempfile::tempdir().unwrap();
    let config = webhook(&receiver.url("/hook"));
    let incidents: Vec<Incident> = (0..3)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(2));
            incident()
        })
        .collect();

    let (alerts, _metrics) = outbox_to(&config, state.path());
    for incident in &incidents {
        alerts.enqueue(alerts::Event::Opened, incident).unwrap();
    }
    let (stop, task) = start(&alerts, fast());
    wait_until("a few failed attempts", Duration::from_secs(10), || {
        receiver.seen().len() >= 3
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(alerts.outbox().pending().unwrap().len(), 3);
    assert!(receiver.accepted().is_empty());

    // The restart: a new sender over the same directory; the daemon reporting
    // the same state changes again queues nothing new.
    accepting.store(true, Ordering::SeqCst);
    let (alerts, metrics) = outbox_to(&config, state.path());
    for incident in &incidents {
        alerts.enqueue(alerts::Event::Opened, incident).unwrap();
    }
    assert_eq!(metric(&metrics, "dropguard_alert_outbox_depth"), 3.0);
    let (stop, task) = start(&alerts, fast());
    wait_until("three deliveries", Duration::from_secs(10), || {
        alerts.outbox().delivered_keys().unwrap().len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    task.await.unwrap();

    let delivered: Vec<String> = receiver
        .accepted()
        .into_iter()
        .filter_map(|s| s.idempotency_key)
        .collect();
    let expected: Vec<String> = incidents
        .iter()
        .map(|i| format!("{}-opened-webhook0", i.id))
        .collect();
    assert_eq!(delivered, expected, "each once, oldest first");
    assert_eq!(metric(&metrics, "dropguard_alert_outbox_depth"), 0.0);
}
