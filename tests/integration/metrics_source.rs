//! The metrics source against real HTTP servers on loopback: a django-prometheus-like
//! endpoint served by the test, and Debian's Prometheus server scraping it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dropguard::config::{self, QueryConfig, ScrapeConfig, SecretUrl};
use dropguard::event::{Event, Payload};
use dropguard::sources::SourceStats;
use dropguard::sources::metrics::{run_query, run_scrape};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ERRORS: &str = r#"django_http_responses_total_by_status_total{status=~"5.."}"#;

/// What the endpoint answers to its n-th request (1-based).
enum Answer {
    Metrics(String),
    Status(u16),
    /// A 200 whose body is not the text format.
    Garbage,
    /// No answer for this long, then the connection closes.
    Hang(Duration),
}

/// An HTTP/1.1 server on a free loopback port, one thread per connection, that
/// answers GET requests from a script. Stops accepting on drop.
struct Endpoint {
    port: u16,
    stop: Arc<AtomicBool>,
    /// When each request came, in order: rates are checked against the time that
    /// really passed between scrapes, not the nominal interval, so that a loaded
    /// machine does not fail the test.
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Endpoint {
    fn start(script: impl Fn(u64) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(script);
        let (stop_flag, hit_times) = (stop.clone(), arrivals.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (script, hit_times) = (script.clone(), hit_times.clone());
                std::thread::spawn(move || serve(stream, &*script, &hit_times));
            }
        });
        Self {
            port,
            stop,
            arrivals,
        }
    }

    fn hits(&self) -> u64 {
        self.arrivals.lock().unwrap().len() as u64
    }

    /// `increase` per second between the arrivals of requests `from` and `to`
    /// (1-based).
    fn rate(&self, increase: f64, from: u64, to: u64) -> f64 {
        let arrivals = self.arrivals.lock().unwrap();
        let at = |n: u64| arrivals[usize::try_from(n - 1).unwrap()];
        increase / (at(to) - at(from)).as_secs_f64()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    mut stream: TcpStream,
    script: &(dyn Fn(u64) -> Answer + Send + Sync),
    arrivals: &Mutex<Vec<Instant>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let n = {
        let mut arrivals = arrivals.lock().unwrap();
        arrivals.push(Instant::now());
        arrivals.len() as u64
    };
    let (status, body) = match script(n) {
        Answer::Metrics(body) => (200, body),
        Answer::Status(status) => (status, "Internal Server Error".to_string()),
        Answer::Garbage => (
            200,
            "<html><body>Welcome to nginx!</body></html>".to_string(),
        ),
        Answer::Hang(time) => {
            std::thread::sleep(time);
            return;
        }
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A django-prometheus exposition: the responses-by-status counter and a latency
/// histogram. With `process_start`, also the `_created` samples and the process
/// start time prometheus_client adds; without, as its multiprocess mode serves it.
fn django_metrics(process_start: Option<f64>, ok: f64, errors_500: f64, errors_503: f64) -> String {
    let mut text = String::new();
    if let Some(start) = process_start {
        text.push_str(&format!(
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
             # TYPE process_start_time_seconds gauge\n\
             process_start_time_seconds {start:.2}\n"
        ));
    }
    text.push_str(&format!(
        "# HELP django_http_responses_total_by_status_total Count of responses by status.\n\
         # TYPE django_http_responses_total_by_status_total counter\n\
         django_http_responses_total_by_status_total{{status=\"200\"}} {ok:.1}\n\
         django_http_responses_total_by_status_total{{status=\"500\"}} {errors_500:.1}\n\
         django_http_responses_total_by_status_total{{status=\"503\"}} {errors_503:.1}\n"
    ));
    if let Some(start) = process_start {
        text.push_str(&format!(
            "# HELP django_http_responses_total_by_status_created Count of responses by status.\n\
             # TYPE django_http_responses_total_by_status_created gauge\n\
             django_http_responses_total_by_status_created{{status=\"200\"}} {start:.2}\n\
             django_http_responses_total_by_status_created{{status=\"500\"}} {start:.2}\n\
             django_http_responses_total_by_status_created{{status=\"503\"}} {start:.2}\n"
        ));
    }
    text.push_str(&format!(
        "# HELP django_http_requests_latency_seconds_by_view_method Histogram of request processing time labelled by view.\n\
         # TYPE django_http_requests_latency_seconds_by_view_method histogram\n\
         django_http_requests_latency_seconds_by_view_method_bucket{{le=\"0.1\",method=\"GET\",view=\"orders\"}} {ok:.1}\n\
         django_http_requests_latency_seconds_by_view_method_bucket{{le=\"+Inf\",method=\"GET\",view=\"orders\"}} {ok:.1}\n\
         django_http_requests_latency_seconds_by_view_method_count{{method=\"GET\",view=\"orders\"}} {ok:.1}\n\
         django_http_requests_latency_seconds_by_view_method_sum{{method=\"GET\",view=\"orders\"}} 1.5\n"
    ));
    text
}

fn scrape_config(url: &str, interval_ms: u64, timeout_ms: u64) -> ScrapeConfig {
    ScrapeConfig {
        url: SecretUrl::new(url),
        counters: vec![ERRORS.to_string()],
        interval: config::Duration(Duration::from_millis(interval_ms)),
        timeout: config::Duration(Duration::from_millis(timeout_ms)),
    }
}

/// The next event, failing the test after `limit`.
async fn next_event(rx: &mut mpsc::Receiver<Event>, limit: Duration) -> Event {
    tokio::time::timeout(limit, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {limit:?}"))
        .expect("the source closed its channel")
}

fn rate_of(event: &Event) -> (&str, f64) {
    match &event.payload {
        Payload::Rate { series, per_second } => (series, *per_second),
        other => panic!("expected a rate, got {other:?}"),
    }
}

fn assert_near(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= expected * tolerance,
        "{what}: {actual} per second, expected {expected} ± {:.0}%",
        tolerance * 100.0
    );
}

/// Log lines written through `tracing` on this thread, for checking what is shown.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Cancels the source and fails unless it ends promptly.
async fn stop(shutdown: CancellationToken, task: tokio::task::JoinHandle<()>) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the source did not stop within 1 s of cancel")
        .expect("the source task panicked");
}

#[tokio::test]
async fn scrape_rate_follows_the_5xx_counter_and_a_restart_gives_no_absurd_rate() {
    // Scrapes 1-4: the old process, long up (1000 errors), 10 more 5xx per scrape
    // (7 on 500, 3 on 503) and 100 successes. Scrapes 5-7: a restarted process
    // (a new start time) whose 500 counter starts again, 3 errors per scrape.
    // Scrape 8 on: restarted again, without the start time or _created samples
    // (prometheus_client's multiprocess mode): only the values going down tell.
    let endpoint = Endpoint::start(|n| {
        Answer::Metrics(match n {
            1..=4 => {
                let n = n as f64;
                django_metrics(
                    Some(1000.0),
                    5000.0 + 100.0 * n,
                    900.0 + 7.0 * n,
                    100.0 + 3.0 * n,
                )
            }
            5..=7 => {
                let m = (n - 4) as f64;
                django_metrics(Some(2000.0), 100.0 * m, 3.0 * m, 0.0)
            }
            _ => {
                let m = (n - 7) as f64;
                django_metrics(None, 50.0 * m, 1.0 * m, 1.0 * m)
            }
        })
    });
    let url = format!("http://127.0.0.1:{}/metrics", endpoint.port);
    let stats = SourceStats::detached().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    // A second between scrapes keeps a loaded machine's scheduling delay (tens of
    // milliseconds) well inside the 20% the rates are checked to.
    let interval = 1000;
    let task = tokio::spawn(run_scrape(
        scrape_config(&url, interval, 2000),
        tx,
        stats.clone(),
        shutdown.clone(),
    ));

    let source = format!("scrape:http://127.0.0.1:{}/********", endpoint.port);
    // Events come from scrape 2 on: 2, 3 and 4 from the old process.
    for scrape in 2..=4 {
        let event = next_event(&mut rx, Duration::from_secs(5)).await;
        assert_eq!(&*event.source, source);
        let (series, per_second) = rate_of(&event);
        assert_eq!(series, ERRORS);
        assert_near(
            per_second,
            endpoint.rate(10.0, scrape - 1, scrape),
            0.2,
            &format!("scrape {scrape}"),
        );
    }
    // Scrape 5: the restart. A naive difference would be (3 - 928) / 1 s.
    let event = next_event(&mut rx, Duration::from_secs(5)).await;
    let (_, per_second) = rate_of(&event);
    assert_near(
        per_second,
        endpoint.rate(3.0, 4, 5),
        0.2,
        "the scrape after the restart",
    );
    for scrape in 6..=7 {
        let event = next_event(&mut rx, Duration::from_secs(5)).await;
        assert_near(
            rate_of(&event).1,
            endpoint.rate(3.0, scrape - 1, scrape),
            0.2,
            &format!("scrape {scrape}, after the restart"),
        );
    }
    // Scrape 8: the 500 counter down from 9 to 1 (the 503 one up from 0 to 1), and
    // nothing else says the process restarted.
    for scrape in 8..=9 {
        let event = next_event(&mut rx, Duration::from_secs(5)).await;
        assert_near(
            rate_of(&event).1,
            endpoint.rate(2.0, scrape - 1, scrape),
            0.2,
            &format!("scrape {scrape}, after the unannounced restart"),
        );
    }
    stop(shutdown, task).await;
    let events = stats.events.with_label_values(&[&source]).get();
    assert!(events >= 8, "{events} events counted");
    assert!(stats.bytes.with_label_values(&[&source]).get() > 0);
    for kind in ["scrape", "parse"] {
        assert_eq!(
            stats.errors.with_label_values(&[&source, kind]).get(),
            0,
            "{kind} errors"
        );
    }
}

#[tokio::test]
async fn failed_scrapes_are_counted_logged_without_the_secret_and_retried() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let endpoint = Endpoint::start(|n| match n {
        2 => Answer::Status(500),
        3 => Answer::Garbage,
        4 => Answer::Hang(Duration::from_secs(2)),
        _ => Answer::Metrics(django_metrics(Some(1000.0), 0.0, 20.0 * n as f64, 0.0)),
    });
    let url = format!(
        "http://127.0.0.1:{}/metrics/s3cret-path?token=t0k3n",
        endpoint.port
    );
    let stats = SourceStats::detached().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let interval = 500;
    let task = tokio::spawn(run_scrape(
        scrape_config(&url, interval, 250),
        tx,
        stats.clone(),
        shutdown.clone(),
    ));

    // Scrapes 2, 3 and 4 fail; scrape 5 is read against scrape 1, four intervals
    // before: 80 errors over about 2 s.
    let event = next_event(&mut rx, Duration::from_secs(8)).await;
    assert!(endpoint.hits() >= 5, "the first rate came before scrape 5");
    assert_near(
        rate_of(&event).1,
        endpoint.rate(80.0, 1, 5),
        0.2,
        "the rate across the failures",
    );
    // And the source goes on.
    let event = next_event(&mut rx, Duration::from_secs(3)).await;
    assert_near(
        rate_of(&event).1,
        endpoint.rate(20.0, 5, 6),
        0.2,
        "the next rate",
    );
    stop(shutdown, task).await;

    let source = format!("scrape:http://127.0.0.1:{}/********", endpoint.port);
    let errors = |kind: &str| {
        stats
            .errors
            .with_label_values(&[source.as_str(), kind])
            .get()
    };
    assert_eq!(errors("scrape"), 2, "the HTTP 500 and the timeout");
    assert_eq!(errors("parse"), 1, "the HTML page");
    let logs = logs.text();
    for expected in [
        "HTTP 500",
        "unreadable exposition, line 1",
        "timeout",
        &source,
    ] {
        assert!(
            logs.contains(expected),
            "the logs do not say {expected:?}:\n{logs}"
        );
    }
    for secret in ["s3cret", "t0k3n"] {
        assert!(!logs.contains(secret), "the logs show {secret:?}:\n{logs}");
    }
}

#[tokio::test]
async fn an_endpoint_nobody_listens_on_is_counted_until_cancel() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let stats = SourceStats::detached().unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_scrape(
        scrape_config(&url, 100, 500),
        tx,
        stats.clone(),
        shutdown.clone(),
    ));
    let source = format!("scrape:http://127.0.0.1:{port}/********");
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.errors.with_label_values(&[&source, "scrape"]).get() < 3 {
        assert!(
            Instant::now() < deadline,
            "refused scrapes were not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!task.is_finished(), "the source gave up");
    assert!(rx.try_recv().is_err(), "an event without any scrape");
    stop(shutdown, task).await;
    let logs = logs.text();
    assert!(
        logs.contains("Connection refused"),
        "the logs do not say why:\n{logs}"
    );
    assert!(
        !logs.contains("/metrics"),
        "the logs show the path:\n{logs}"
    );
}

/// Debian's Prometheus server on a free loopback port, with its data in a temp
/// dir; killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    const BINARY: &str = "/usr/bin/prometheus";

    fn start(target_port: u16) -> Self {
        assert!(
            std::path::Path::new(Self::BINARY).exists(),
            "{} is missing: install Debian's Prometheus server with `apt-get install -y prometheus` (CI installs it); this test needs a real one",
            Self::BINARY
        );
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: app\n    scrape_interval: 1s\n    scrape_timeout: 1s\n\
                 \x20   static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("writing prometheus.yml");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(Self::BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", Self::BINARY));
        let prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = agent
                .get(format!("{}/-/ready", prometheus.url))
                .call()
                .is_ok_and(|response| response.status() == 200);
            if ready {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus was not ready within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a rate event near `expected`, up to `limit`; returns it.
async fn wait_for_rate(rx: &mut mpsc::Receiver<Event>, expected: f64, limit: Duration) -> Event {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(event)) = tokio::time::timeout(remaining, rx.recv()).await else {
            panic!("no rate near {expected} within {limit:?}; saw {seen:?}");
        };
        let (_, per_second) = rate_of(&event);
        assert!(
            per_second.is_finite() && per_second >= 0.0,
            "rate {per_second}"
        );
        if (per_second - expected).abs() <= expected * 0.2 {
            return event;
        }
        seen.push(per_second);
    }
}

#[tokio::test]
async fn query_mode_reads_the_rate_from_a_real_prometheus() {
    // The application's 5xx counter grows 5 per second, then 20 per second.
    let started = Instant::now();
    let switch = Arc::new(Mutex::new(None::<Instant>));
    let switch_at = switch.clone();
    let endpoint = Endpoint::start(move |_| {
        let now = Instant::now();
        let errors = match *switch_at.lock().unwrap() {
            None => 5.0 * (now - started).as_secs_f64(),
            Some(at) => 5.0 * (at - started).as_secs_f64() + 20.0 * (now - at).as_secs_f64(),
        };
        Answer::Metrics(django_metrics(Some(1000.0), 0.0, errors.floor(), 0.0))
    });
    let prometheus = Prometheus::start(endpoint.port);

    let logs = Logs::default();
    let _capture = logs.capture();
    let stats = SourceStats::detached().unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let query = r#"sum(rate(django_http_responses_total_by_status_total{status=~"5.."}[5s]))"#;
    let config = |query: &str| QueryConfig {
        url: SecretUrl::new(format!("{}/", prometheus.url)),
        query: query.to_string(),
        interval: config::Duration(Duration::from_millis(500)),
        timeout: config::Duration(Duration::from_secs(2)),
    };
    let task = tokio::spawn(run_query(
        config(query),
        tx,
        stats.clone(),
        shutdown.clone(),
    ));
    // A query Prometheus refuses, beside it: reported with Prometheus' message.
    let (bad_tx, mut bad_rx) = mpsc::channel(4);
    let bad = tokio::spawn(run_query(
        config("sum(rate(django_http_responses_total_by_status_total[5s]"),
        bad_tx,
        stats.clone(),
        shutdown.clone(),
    ));

    let event = wait_for_rate(&mut rx, 5.0, Duration::from_secs(60)).await;
    let source = format!("query:{}", prometheus.url);
    assert_eq!(&*event.source, source);
    assert_eq!(rate_of(&event).0, query);

    *switch.lock().unwrap() = Some(Instant::now());
    wait_for_rate(&mut rx, 20.0, Duration::from_secs(30)).await;

    stop(shutdown.clone(), task).await;
    stop(shutdown, bad).await;
    assert!(
        bad_rx.try_recv().is_err(),
        "the refused query gave an event"
    );
    assert!(stats.errors.with_label_values(&[&source, "scrape"]).get() >= 1);
    let logs = logs.text();
    for expected in ["HTTP 400", "bad_data", "unclosed left parenthesis"] {
        assert!(
            logs.contains(expected),
            "the logs do not say {expected:?}:\n{logs}"
        );
    }
}
