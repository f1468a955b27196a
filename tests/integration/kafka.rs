//! The Kafka source against librdkafka's mock cluster: the Kafka protocol on
//! loopback, with real consumer groups, commits and broker outages.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use dropguard::config::{JsonFields, KafkaLogConfig, LogFormat, OffsetReset};
use dropguard::sources::kafka::{KafkaError, run};
use dropguard::sources::{Event, Payload, SourceStats};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous bound for anything that should happen "soon": the tests wait for
/// conditions, this is only how long before a wait counts as a failure.
const DEADLINE: Duration = Duration::from_secs(30);

/// A one-broker mock cluster, owned by the producer that writes to it.
pub struct MockKafka {
    producer: FutureProducer,
    pub bootstrap: String,
}

impl MockKafka {
    /// Starts the cluster with `topics` (name, partitions) created.
    pub fn start(topics: &[(&str, i32)]) -> Self {
        let producer: FutureProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            // No duplicates from retries, so "each message once" is the source's doing.
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .create()
            .expect("creating the producer and its mock cluster");
        let cluster = producer
            .client()
            .mock_cluster()
            .expect("test.mock.num.brokers gives the producer a mock cluster");
        // The mock delays a group's first rebalance by 3 s and the Rust wrapper has no
        // setting for it. SAFETY: the pointer comes from the live producer, which owns
        // the cluster for as long as `self` lives.
        unsafe {
            let raw =
                rdkafka::bindings::rd_kafka_handle_mock_cluster(producer.client().native_ptr());
            assert!(!raw.is_null());
            rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
        }
        for &(topic, partitions) in topics {
            cluster
                .create_topic(topic, partitions, 1)
                .expect("creating a mock topic");
        }
        let bootstrap = cluster.bootstrap_servers();
        drop(cluster);
        Self {
            producer,
            bootstrap,
        }
    }

    fn broker_down(&self) {
        let cluster = self
            .producer
            .client()
            .mock_cluster()
            .expect("the mock cluster");
        cluster.broker_down(1).expect("taking mock broker 1 down");
    }

    fn broker_up(&self) {
        let cluster = self
            .producer
            .client()
            .mock_cluster()
            .expect("the mock cluster");
        cluster.broker_up(1).expect("bringing mock broker 1 back");
    }

    /// Produces one message and waits until the broker has it.
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<i32>,
        payload: &str,
        timestamp_ms: Option<i64>,
    ) {
        produce(&self.producer, topic, partition, payload, timestamp_ms).await;
    }

    fn source(&self, topic: &str, group: &str) -> KafkaLogConfig {
        KafkaLogConfig {
            brokers: self.bootstrap.clone(),
            topic: topic.into(),
            group_id: group.into(),
            auto_offset_reset: OffsetReset::Earliest,
            format: LogFormat::Auto,
            fields: JsonFields::default(),
            max_event_bytes: 64 * 1024,
        }
    }
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    payload: &str,
    timestamp_ms: Option<i64>,
) {
    let mut record = FutureRecord::<(), str>::to(topic).payload(payload);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    if let Some(timestamp) = timestamp_ms {
        record = record.timestamp(timestamp);
    }
    producer
        .send(record, DEADLINE)
        .await
        .map_err(|(error, _)| error)
        .expect("producing to the mock cluster");
}

/// A running source and what it hands on.
struct Source {
    task: JoinHandle<Result<(), KafkaError>>,
    shutdown: CancellationToken,
    stats: SourceStats,
    rx: mpsc::Receiver<Event>,
}

impl Source {
    fn start(config: KafkaLogConfig, capacity: usize) -> Self {
        let stats = SourceStats::detached().unwrap();
        let shutdown = CancellationToken::new();
        let (tx, rx) = mpsc::channel(capacity);
        let task = tokio::spawn(run(config, tx, stats.clone(), shutdown.clone()));
        Self {
            task,
            shutdown,
            stats,
            rx,
        }
    }

    async fn next(&mut self) -> Event {
        self.next_within(DEADLINE).await
    }

    async fn next_within(&mut self, deadline: Duration) -> Event {
        tokio::time::timeout(deadline, self.rx.recv())
            .await
            .expect("no event from the Kafka source in time")
            .expect("the Kafka source stopped")
    }

    async fn next_message(&mut self) -> String {
        self.next().await.text().to_string()
    }

    /// Stops the source; returns what it had handed on and not yet been read.
    async fn stop(mut self) -> Vec<String> {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the Kafka source did not stop in time")
            .expect("the Kafka source panicked")
            .expect("the Kafka source failed");
        let mut rest = Vec::new();
        while let Some(event) = self.rx.recv().await {
            rest.push(event.text().to_string());
        }
        rest
    }

    fn errors(&self, topic: &str, kind: &str) -> u64 {
        self.stats.errors.with_label_values(&[topic, kind]).get()
    }

    fn lag(&self, topic: &str, partition: i32) -> i64 {
        self.stats
            .kafka_lag
            .with_label_values(&[topic, &partition.to_string()])
            .get()
    }
}

/// Waits until `condition` holds, failing with `what` after [`DEADLINE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn numbered(i: usize) -> String {
    format!("message {i:03}")
}

fn secs(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_text_and_json_payloads_become_events() {
    let kafka = MockKafka::start(&[("app-logs", 2)]);
    let text = "2026-11-25 16:22:38 ERROR django.request Internal Server Error: /orders/";
    let json = r#"{"time": "2026-11-25T16:22:39Z", "level": "ERROR", "message": "column \"legacy_code\" does not exist", "logger": "django.db.backends"}"#;
    let untimed = "Traceback (most recent call last):";
    kafka.produce("app-logs", Some(1), text, None).await;
    kafka.produce("app-logs", Some(0), json, None).await;
    kafka
        .produce("app-logs", Some(0), untimed, Some(1_795_623_760_000))
        .await;

    let mut source = Source::start(kafka.source("app-logs", "dropguard"), 16);
    let mut events = BTreeMap::new();
    for _ in 0..3 {
        let event = source.next().await;
        events.insert(event.text().to_string(), event);
    }

    let line = &events[text];
    assert_eq!(&*line.source, "kafka:app-logs/1");
    let Payload::Log(record) = &line.payload else {
        panic!("a log payload")
    };
    assert_eq!(record.level, None);
    assert_eq!(record.fields, None);
    assert!((secs(line.logged_at.unwrap()) - 1_795_623_758.0).abs() < 1e-3);

    let message = r#"column "legacy_code" does not exist"#;
    let structured = &events[message];
    assert_eq!(&*structured.source, "kafka:app-logs/0");
    let Payload::Log(record) = &structured.payload else {
        panic!("a log payload")
    };
    assert_eq!(record.level.as_deref(), Some("ERROR"));
    let fields = record.fields.as_ref().expect("JSON fields");
    assert_eq!(fields["logger"], "django.db.backends");
    assert!((secs(structured.logged_at.unwrap()) - 1_795_623_759.0).abs() < 1e-3);

    // No time in the record: the message's Kafka timestamp stands in.
    let traceback = &events[untimed];
    assert_eq!(&*traceback.source, "kafka:app-logs/0");
    assert!((secs(traceback.logged_at.unwrap()) - 1_795_623_760.0).abs() < 1e-3);
    assert!(traceback.observed_at > line.logged_at.unwrap());

    // Counted once handed on, which is just after the test could read the event.
    eventually("the three events are counted", || {
        source.stats.events.with_label_values(&["app-logs"]).get() == 3
    })
    .await;
    assert_eq!(
        source.stats.bytes.with_label_values(&["app-logs"]).get(),
        (text.len() + json.len() + untimed.len()) as u64
    );
    assert!(source.stop().await.is_empty());
}

/// Stopped while it waits for room in the channel, the source must not commit the
/// message it holds; restarted in the same group it goes on with exactly that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_offsets_are_committed_only_after_hand_on() {
    let kafka = MockKafka::start(&[("app-logs", 1)]);
    for i in 0..10 {
        kafka.produce("app-logs", None, &numbered(i), None).await;
    }

    let mut first = Source::start(kafka.source("app-logs", "dropguard"), 2);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(first.next_message().await);
    }
    // Now it fills the channel (2) and holds one more it has read but cannot hand on.
    let size = numbered(0).len() as u64;
    eventually("the source holds a message it cannot hand on", || {
        first.rx.len() == 2 && first.stats.bytes.with_label_values(&["app-logs"]).get() == 6 * size
    })
    .await;
    seen.extend(first.stop().await);
    assert_eq!(seen, (0..5).map(numbered).collect::<Vec<_>>());

    for i in 10..15 {
        kafka.produce("app-logs", None, &numbered(i), None).await;
    }
    let sentinel = numbered(999);
    kafka.produce("app-logs", None, &sentinel, None).await;

    let mut second = Source::start(kafka.source("app-logs", "dropguard"), 64);
    // The mock (unlike a broker) keeps a group its last member left in "joining" for
    // that member's session.timeout.ms - 1 s (librdkafka's default: 45 s), and a new
    // member waits that out before it is given the partition.
    let mut message = second
        .next_within(Duration::from_secs(90))
        .await
        .text()
        .to_string();
    while message != sentinel {
        seen.push(message);
        message = second.next_message().await;
    }
    seen.push(message);
    let expected: Vec<String> = (0..15).map(numbered).chain([sentinel]).collect();
    assert_eq!(seen, expected, "each message exactly once, in order");
    assert!(second.stop().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_rides_out_a_broker_outage() {
    let kafka = MockKafka::start(&[("app-logs", 1)]);
    let mut source = Source::start(kafka.source("app-logs", "dropguard"), 64);
    let mut seen = Vec::new();
    for i in 0..5 {
        kafka.produce("app-logs", None, &numbered(i), None).await;
    }
    for _ in 0..5 {
        seen.push(source.next_message().await);
    }

    kafka.broker_down();
    eventually("the source counts the outage", || {
        source.errors("app-logs", "broker") > 0
    })
    .await;
    // Produced while the broker is away: queued in the producer until it is back.
    let producer = kafka.producer.clone();
    let during = tokio::spawn(async move {
        for i in 5..10 {
            produce(&producer, "app-logs", None, &numbered(i), None).await;
        }
    });
    eventually("the producer holds the first message of the outage", || {
        kafka.producer.in_flight_count() > 0
    })
    .await;
    assert!(
        !source.task.is_finished(),
        "the source gave up during the outage"
    );
    kafka.broker_up();
    tokio::time::timeout(DEADLINE, during)
        .await
        .expect("messages produced during the outage were not delivered in time")
        .expect("the producing task panicked");
    for i in 10..15 {
        kafka.produce("app-logs", None, &numbered(i), None).await;
    }

    while seen.len() < 15 {
        seen.push(source.next_message().await);
    }
    assert_eq!(seen, (0..15).map(numbered).collect::<Vec<_>>());
    assert!(source.stop().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_lag_grows_while_the_channel_is_full_and_returns_to_zero() {
    let kafka = MockKafka::start(&[("app-logs", 1)]);
    let mut source = Source::start(kafka.source("app-logs", "dropguard"), 1);
    kafka.produce("app-logs", None, &numbered(0), None).await;
    assert_eq!(source.next_message().await, numbered(0));

    for i in 1..21 {
        kafka.produce("app-logs", None, &numbered(i), None).await;
    }
    // One event waits in the channel, one in the source: 18 behind the watermark
    // (19 when the one waiting in the source counts as not yet read).
    eventually("the lag shows the backlog", || {
        (18..=19).contains(&source.lag("app-logs", 0))
    })
    .await;

    for i in 1..21 {
        assert_eq!(source.next_message().await, numbered(i));
    }
    eventually("the lag is back to 0", || source.lag("app-logs", 0) == 0).await;
    assert!(source.stop().await.is_empty());
}

/// Nothing listens on the brokers' port: the source keeps trying, counts the
/// failures, and still stops at once when told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_without_brokers_retries_and_stops_promptly() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = KafkaLogConfig {
        brokers: format!("127.0.0.1:{port}"),
        topic: "app-logs".into(),
        group_id: "dropguard".into(),
        auto_offset_reset: OffsetReset::Latest,
        format: LogFormat::Auto,
        fields: JsonFields::default(),
        max_event_bytes: 1024,
    };
    let source = Source::start(config, 4);
    eventually("the source counts the unreachable broker", || {
        source.errors("app-logs", "broker") > 0
    })
    .await;
    assert!(!source.task.is_finished(), "the source gave up");
    let stopping = Instant::now();
    assert!(source.stop().await.is_empty());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        stopping.elapsed()
    );
}

/// A deploy tool announcing on a Kafka topic: the daemon reads the announcement,
/// resolves what the migration dropped, and (nothing was preserved) opens an
/// incident at once; a message that is no announcement is counted and skipped.
#[test]
fn deploy_announcements_on_a_kafka_topic_are_deploys() {
    use crate::django_support::{django, django_project};
    use crate::harness::{Daemon, EngineKind, TestDb, Workspace, block_on};

    let kafka = MockKafka::start(&[("deploys", 1)]);
    let ws = Workspace::new();
    let db = TestDb::create(EngineKind::Sqlite, "kafkadeploy");
    django(&db.url, &["manage.py", "migrate", "-v0"]);
    let config = ws.write_config(&format!(
        r#"
environment = "test"
[database]
url = "{url}"
[django]
project_dir = "{project}"
[state]
dir = "{state}"
[preserve]
auto = false
[[deploys.kafka]]
brokers = "{brokers}"
topic = "deploys"
group_id = "dropguard-test"
auto_offset_reset = "earliest"
format = "json"
[server]
listen = "127.0.0.1:0"
"#,
        url = db.url,
        project = django_project().display(),
        state = ws.path().join("state").display(),
        brokers = kafka.bootstrap,
    ));
    let daemon = Daemon::start(&config);
    daemon.wait_ready();
    block_on(kafka.produce("deploys", None, "deploy v7 done", None));
    block_on(kafka.produce(
        "deploys",
        None,
        r#"{"migrations": ["catalog.0016_remove_product_brand"], "release": "v7"}"#,
        None,
    ));
    let started = Instant::now();
    let incident = loop {
        let (status, body) = daemon.get("/api/v1/incidents");
        assert_eq!(status, 200, "{body}");
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(first) = listed.as_array().and_then(|l| l.first()) {
            break first.clone();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no incident from the announced deploy"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(incident["deploy"]["origins"], serde_json::json!(["kafka"]));
    assert_eq!(incident["deploy"]["release"], "v7");
    assert_eq!(incident["triggers"], serde_json::json!(["unpreserved"]));
    assert!(
        incident["headline"]
            .as_str()
            .unwrap()
            .contains("catalog_product.brand_code"),
        "{incident:#}"
    );
    let (_, metrics) = daemon.get("/metrics");
    assert!(
        metrics
            .contains(r#"dropguard_source_errors_total{kind="announcement",source="deploys"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dropguard_deploys_total{origin="kafka"} 1"#),
        "{metrics}"
    );
}
