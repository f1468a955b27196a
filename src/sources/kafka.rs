//! Kafka source: one topic read in a consumer group, each message's payload made
//! into an [`Event`] and handed on over a bounded channel.
//!
//! It owns its consumer, the group's offsets and its broker failures. An offset is
//! stored, and so later committed, only once its event is in the channel: a
//! restart repeats at most what was handed on since the last commit and never
//! skips what was not handed on (at least once). A full channel makes it wait,
//! never drop. It must never decide what a record means.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::IntGaugeVec;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError as RdKafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{SourceStats, decode_record};
use crate::config::{JsonFields, KafkaLogConfig, LogFormat, OffsetReset};
use crate::event::{Event, Payload};

/// How often the lag gauge is refreshed. Each refresh asks the partition leaders
/// for their high watermarks (a request per assigned partition), so it is well
/// under a scrape interval but no shorter than it needs to be.
const LAG_REFRESH: Duration = Duration::from_secs(2);

/// Bound on each broker request a lag refresh makes; a partition whose leader
/// does not answer in time keeps its last reported lag.
const LAG_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long stopping waits for the final commit and for leaving the group. Past
/// it `run` returns and the consumer goes on closing on a blocking thread; what
/// it could not commit is read again on the next start.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before replacing a consumer librdkafka declared unusable (a fatal
/// error), so a persistent cause does not turn into a busy loop.
const REBUILD_BACKOFF: Duration = Duration::from_secs(5);

/// `auto.commit.interval.ms`: stored offsets are committed this often (and on
/// rebalance and close), which bounds what a crash makes us read twice.
const AUTO_COMMIT_INTERVAL_MS: &str = "1000";

/// Why the Kafka source could not start. Failures once running (a broker away, a
/// commit refused) are not errors of `run`: they are logged, counted in
/// `dropguard_source_errors_total{kind="broker"|"commit"}` and retried.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error(
        "could not create the Kafka consumer for topic {topic:?} (brokers {brokers:?}, group \
         {group_id:?}); check those keys of the logs.kafka entry"
    )]
    Create {
        topic: String,
        brokers: String,
        group_id: String,
        /// librdkafka's reason (an invalid setting names itself), boxed because
        /// librdkafka's error is large and this one travels in every `Result`.
        #[source]
        source: Box<RdKafkaError>,
    },

    #[error("could not subscribe to Kafka topic {topic:?}; check logs.kafka.topic")]
    Subscribe {
        topic: String,
        #[source]
        source: Box<RdKafkaError>,
    },
}

/// Reads `config.topic` in consumer group `config.group_id` and hands every
/// message on to `tx` as an [`Event`] until `shutdown` is cancelled (or `tx`'s
/// receiver is gone, which only happens when the pipeline is stopping).
///
/// Returns an error only for what stops it from starting; everything after that
/// is retried. On the way out it commits what was handed on and leaves the group,
/// so another instance (or the next start) takes over where this one stopped.
pub async fn run(
    config: KafkaLogConfig,
    tx: mpsc::Sender<Event>,
    stats: SourceStats,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let topic: Arc<str> = config.topic.as_str().into();
    let mut session = Session::start(&config, &topic, &stats)?;
    let mut decoder = Decoder::new(&config, topic.clone(), stats.clone());
    tracing::info!(
        topic = %topic,
        group_id = %config.group_id,
        brokers = %config.brokers,
        "reading Kafka topic"
    );
    loop {
        let stop = consume(&session.consumer, &mut decoder, &tx, &shutdown).await;
        session.close().await;
        match stop {
            Stop::Shutdown => return Ok(()),
            Stop::ChannelClosed => {
                tracing::info!(topic = %topic, "the event channel closed; Kafka source stopping");
                return Ok(());
            }
            Stop::Fatal => {}
        }
        // A new consumer rejoins the group and resumes at the committed offsets.
        session = loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(REBUILD_BACKOFF) => {}
            }
            match Session::start(&config, &topic, &stats) {
                Ok(session) => break session,
                Err(error) => {
                    stats.errors.with_label_values(&[&*topic, "broker"]).inc();
                    tracing::warn!(
                        topic = %topic,
                        error = &error as &dyn std::error::Error,
                        "could not replace the Kafka consumer; trying again"
                    );
                }
            }
        };
    }
}

/// Why [`consume`] returned.
enum Stop {
    Shutdown,
    ChannelClosed,
    /// librdkafka reported a fatal error: this consumer can do no more.
    Fatal,
}

/// Receives messages and hands them on until told to stop. An offset is stored
/// only after its event went into the channel; one not handed on when shutdown
/// comes stays unstored and is read again next time.
async fn consume(
    consumer: &StreamConsumer<SourceContext>,
    decoder: &mut Decoder,
    tx: &mpsc::Sender<Event>,
    shutdown: &CancellationToken,
) -> Stop {
    let topic = decoder.topic.clone();
    loop {
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Stop::Shutdown,
            received = consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(RdKafkaError::PartitionEOF(_)) => continue,
            Err(error @ RdKafkaError::MessageConsumptionFatal(_)) => {
                decoder.count_error("broker");
                tracing::error!(
                    topic = %topic,
                    %error,
                    "the Kafka consumer failed for good; a new one will take its place"
                );
                return Stop::Fatal;
            }
            Err(error) => {
                // librdkafka reconnects and refetches by itself; nothing to redo here.
                decoder.count_error("broker");
                tracing::warn!(topic = %topic, %error, "reading from Kafka failed; retrying");
                continue;
            }
        };
        // A message without a payload (a tombstone) carries no log record.
        if let Some(payload) = message.payload() {
            let event = decoder.event(
                payload,
                message.partition(),
                message.timestamp().to_millis(),
            );
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Stop::Shutdown,
                sent = tx.send(event) => if sent.is_err() {
                    return Stop::ChannelClosed;
                },
            }
            decoder.count_event();
        }
        if let Err(error) = consumer.store_offset_from_message(&message) {
            // Usually the partition went to another member meanwhile; it reads the
            // message again, so nothing is lost.
            decoder.count_error("commit");
            tracing::warn!(
                topic = %topic,
                partition = message.partition(),
                offset = message.offset(),
                %error,
                "could not store the Kafka offset; the message may be read again"
            );
        }
    }
}

/// One consumer and the task reporting its lag.
struct Session {
    consumer: Arc<StreamConsumer<SourceContext>>,
    lag_stop: CancellationToken,
    lag_task: JoinHandle<()>,
    topic: Arc<str>,
    stats: SourceStats,
}

impl Session {
    fn start(
        config: &KafkaLogConfig,
        topic: &Arc<str>,
        stats: &SourceStats,
    ) -> Result<Self, KafkaError> {
        let context = SourceContext {
            topic: topic.clone(),
            stats: stats.clone(),
        };
        let consumer: StreamConsumer<SourceContext> = client_config(config)
            .create_with_context(context)
            .map_err(|source| KafkaError::Create {
                topic: config.topic.clone(),
                brokers: config.brokers.clone(),
                group_id: config.group_id.clone(),
                source: Box::new(source),
            })?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(|source| KafkaError::Subscribe {
                topic: config.topic.clone(),
                source: Box::new(source),
            })?;
        let consumer = Arc::new(consumer);
        let lag_stop = CancellationToken::new();
        let lag_task = tokio::spawn(report_lag(
            consumer.clone(),
            topic.clone(),
            config.auto_offset_reset,
            stats.kafka_lag.clone(),
            lag_stop.clone(),
        ));
        Ok(Self {
            consumer,
            lag_stop,
            lag_task,
            topic: topic.clone(),
            stats: stats.clone(),
        })
    }

    /// Commits the stored offsets and leaves the group. Both block on the
    /// network, so they run on a blocking thread, bounded by [`CLOSE_TIMEOUT`].
    async fn close(self) {
        let topic = self.topic;
        self.lag_stop.cancel();
        if let Err(error) = self.lag_task.await {
            tracing::warn!(topic = %topic, %error, "the Kafka lag reporter failed");
        }
        // The lag task has ended, so this is the consumer's last owner: dropping it
        // here closes it off the async threads.
        let consumer = self.consumer;
        let closing = tokio::task::spawn_blocking(move || {
            let committed = consumer.commit_consumer_state(CommitMode::Sync);
            drop(consumer);
            committed
        });
        match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
            Ok(Ok(Ok(()))) => tracing::debug!(topic = %topic, "Kafka offsets committed"),
            Ok(Ok(Err(error))) if is_no_offset(&error) => {
                tracing::debug!(topic = %topic, "no new Kafka offsets to commit");
            }
            Ok(Ok(Err(error))) => {
                self.stats
                    .errors
                    .with_label_values(&[&*topic, "commit"])
                    .inc();
                tracing::warn!(
                    topic = %topic,
                    %error,
                    "the final Kafka commit failed; messages handed on since the last commit \
                     will be read again on the next start"
                );
            }
            Ok(Err(error)) => {
                tracing::warn!(topic = %topic, %error, "closing the Kafka consumer failed");
            }
            Err(_) => tracing::warn!(
                topic = %topic,
                timeout_secs = CLOSE_TIMEOUT.as_secs(),
                "the Kafka consumer did not close in time; it goes on closing in the background"
            ),
        }
    }
}

/// librdkafka's settings for `config`.
fn client_config(config: &KafkaLogConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("client.id", "dropguard")
        .set(
            "auto.offset.reset",
            match config.auto_offset_reset {
                OffsetReset::Earliest => "earliest",
                OffsetReset::Latest => "latest",
            },
        )
        // Offsets are stored by `consume` once the event is in the channel, and
        // librdkafka commits what was stored: on its timer, on rebalance, on close.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", AUTO_COMMIT_INTERVAL_MS)
        .set("enable.partition.eof", "false")
        .set_log_level(log_level());
    client
}

/// librdkafka formats and filters its logs itself; this asks for no more than
/// the installed `tracing` filter lets through.
fn log_level() -> RDKafkaLogLevel {
    use tracing::level_filters::LevelFilter;
    let current = LevelFilter::current();
    if current >= LevelFilter::DEBUG {
        RDKafkaLogLevel::Debug
    } else if current >= LevelFilter::INFO {
        RDKafkaLogLevel::Notice
    } else if current >= LevelFilter::WARN {
        RDKafkaLogLevel::Warning
    } else {
        RDKafkaLogLevel::Error
    }
}

fn is_no_offset(error: &RdKafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset)
}

/// What the consumer tells us from librdkafka's threads (served while `consume`
/// polls): its logs, rebalances and the outcome of automatic commits.
struct SourceContext {
    topic: Arc<str>,
    stats: SourceStats,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let topic = &*self.topic;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", topic, facility, "{message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", topic, facility, "{message}");
            }
            RDKafkaLogLevel::Notice => {
                tracing::info!(target: "librdkafka", topic, facility, "{message}");
            }
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", topic, facility, "{message}");
            }
        }
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        // The same error is returned by `recv`, where `consume` logs and counts it.
        tracing::debug!(target: "librdkafka", topic = &*self.topic, %error, reason, "client error");
    }
}

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let topic = &*self.topic;
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(topic, partitions = ?partitions(list), "Kafka partitions assigned");
            }
            Rebalance::Revoke(list) => {
                tracing::info!(topic, partitions = ?partitions(list), "Kafka partitions revoked");
            }
            Rebalance::Error(error) => {
                self.stats
                    .errors
                    .with_label_values(&[topic, "broker"])
                    .inc();
                tracing::warn!(topic, %error, "Kafka group rebalance failed; the group retries");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let topic = &*self.topic;
        let failed: Vec<(i32, RdKafkaError)> = offsets
            .elements()
            .iter()
            .filter_map(|element| Some((element.partition(), element.error().err()?)))
            .collect();
        match result {
            Err(error) if !is_no_offset(&error) => {
                self.stats
                    .errors
                    .with_label_values(&[topic, "commit"])
                    .inc();
                tracing::warn!(topic, %error, "Kafka offset commit failed; the next one retries");
            }
            _ if !failed.is_empty() => {
                self.stats
                    .errors
                    .with_label_values(&[topic, "commit"])
                    .inc();
                tracing::warn!(
                    topic,
                    failed = ?failed,
                    "Kafka offset commit failed for some partitions; the next one retries"
                );
            }
            _ => tracing::trace!(topic, "Kafka offsets committed"),
        }
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

/// Makes events of payloads: everything `consume` does to a message apart from
/// receiving it and storing its offset.
struct Decoder {
    topic: Arc<str>,
    format: LogFormat,
    fields: JsonFields,
    max_event_bytes: usize,
    stats: SourceStats,
    /// `kafka:<topic>/<partition>`, built once per partition and shared by its events.
    sources: HashMap<i32, Arc<str>>,
}

impl Decoder {
    fn new(config: &KafkaLogConfig, topic: Arc<str>, stats: SourceStats) -> Self {
        Self {
            topic,
            format: config.format,
            fields: config.fields.clone(),
            max_event_bytes: config.max_event_bytes,
            stats,
            sources: HashMap::new(),
        }
    }

    /// The event for one payload. Its time is the record's own when it carries
    /// one, else the message's Kafka timestamp (`timestamp_ms`).
    fn event(&mut self, payload: &[u8], partition: i32, timestamp_ms: Option<i64>) -> Event {
        let topic = &*self.topic;
        self.stats
            .bytes
            .with_label_values(&[topic])
            .inc_by(payload.len() as u64);
        let (record, logged_at) = decode_record(
            payload,
            self.format,
            &self.fields,
            self.max_event_bytes,
            &self.stats,
            topic,
        );
        let source = self
            .sources
            .entry(partition)
            .or_insert_with(|| format!("kafka:{topic}/{partition}").into())
            .clone();
        Event {
            source,
            observed_at: SystemTime::now(),
            logged_at: logged_at.or_else(|| timestamp_ms.and_then(time_from_millis)),
            written_by: None,
            payload: Payload::Log(record),
        }
    }

    fn count_event(&self) {
        self.stats.events.with_label_values(&[&*self.topic]).inc();
    }

    fn count_error(&self, kind: &str) {
        self.stats
            .errors
            .with_label_values(&[&*self.topic, kind])
            .inc();
    }
}

/// A Kafka timestamp (milliseconds since the epoch); producers that set none
/// send -1, and 0 is no better a time.
fn time_from_millis(millis: i64) -> Option<SystemTime> {
    let millis = u64::try_from(millis).ok().filter(|&millis| millis > 0)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(millis))
}

/// Keeps `dropguard_kafka_consumer_lag{topic, partition}` up to date for the
/// partitions assigned to this consumer, until `stop`; then removes them.
///
/// This runs beside `consume` rather than from librdkafka's statistics because
/// those are only delivered while the consumer is polled, and `consume` stops
/// polling precisely when the channel is full and the lag grows.
async fn report_lag(
    consumer: Arc<StreamConsumer<SourceContext>>,
    topic: Arc<str>,
    reset: OffsetReset,
    gauge: IntGaugeVec,
    stop: CancellationToken,
) {
    let mut shown = BTreeSet::new();
    let mut tick = tokio::time::interval(LAG_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let measuring = {
            let consumer = consumer.clone();
            let topic = topic.clone();
            tokio::task::spawn_blocking(move || measure_lag(&consumer, &topic, reset))
        };
        // Awaited even when stopping: `Session::close` must hold the last reference
        // to the consumer, and each request is bounded by LAG_QUERY_TIMEOUT.
        let lags = match measuring.await {
            Ok(Ok(lags)) => lags,
            Ok(Err(error)) => {
                tracing::debug!(topic = %topic, %error, "could not read the Kafka consumer's position");
                continue;
            }
            Err(error) => {
                tracing::warn!(topic = %topic, %error, "measuring the Kafka lag failed");
                continue;
            }
        };
        let assigned: BTreeSet<i32> = lags.iter().map(|&(partition, _)| partition).collect();
        for (partition, lag) in lags {
            if let Some(lag) = lag {
                gauge
                    .with_label_values(&[&*topic, &partition.to_string()])
                    .set(lag);
                shown.insert(partition);
            }
        }
        // Partitions another member now reads are that member's to report.
        for partition in shown.difference(&assigned).copied().collect::<Vec<_>>() {
            let _ = gauge.remove_label_values(&[&*topic, &partition.to_string()]);
            shown.remove(&partition);
        }
    }
    for partition in shown {
        let _ = gauge.remove_label_values(&[&*topic, &partition.to_string()]);
    }
}

/// Where the consumer stands in a partition, for the lag.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Start {
    /// The next offset it reads.
    At(i64),
    /// Nothing read and nothing committed: `auto.offset.reset` decides.
    Reset,
}

/// Each assigned partition's lag, `None` where it could not be read this time.
/// Blocking: asks the brokers for watermarks (and for committed offsets where
/// nothing was read yet since the assignment).
fn measure_lag(
    consumer: &StreamConsumer<SourceContext>,
    topic: &str,
    reset: OffsetReset,
) -> KafkaResult<Vec<(i32, Option<i64>)>> {
    let positions = consumer.position()?;
    let mut starts: Vec<(i32, Option<Start>)> = Vec::new();
    let mut unread = TopicPartitionList::new();
    for element in positions.elements_for_topic(topic) {
        let start = match element.offset() {
            Offset::Offset(offset) => Some(Start::At(offset)),
            _ => {
                unread.add_partition(topic, element.partition());
                None
            }
        };
        starts.push((element.partition(), start));
    }
    if unread.count() > 0 {
        // Committed offsets are where these partitions will be read from; an error
        // leaves them unknown for this round.
        if let Ok(committed) = consumer.committed_offsets(unread, LAG_QUERY_TIMEOUT) {
            for element in committed.elements_for_topic(topic) {
                let start = match element.offset() {
                    Offset::Offset(offset) => Start::At(offset),
                    _ => Start::Reset,
                };
                if let Some(entry) = starts.iter_mut().find(|(p, _)| *p == element.partition()) {
                    entry.1 = Some(start);
                }
            }
        }
    }
    Ok(starts
        .into_iter()
        .map(|(partition, start)| {
            let lag = start.and_then(|start| {
                let (low, high) = consumer
                    .fetch_watermarks(topic, partition, LAG_QUERY_TIMEOUT)
                    .ok()?;
                Some(partition_lag(low, high, start, reset))
            });
            (partition, lag)
        })
        .collect())
}

/// Messages from where the consumer stands to the high watermark. A position the
/// partition no longer holds (deleted by retention) is reset as the consumer
/// itself will reset it.
fn partition_lag(low: i64, high: i64, start: Start, reset: OffsetReset) -> i64 {
    let position = match start {
        Start::At(offset) if offset >= low => offset,
        _ => match reset {
            OffsetReset::Earliest => low,
            OffsetReset::Latest => high,
        },
    };
    (high - position).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaLogConfig {
        KafkaLogConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "app-logs".into(),
            group_id: "dropguard".into(),
            auto_offset_reset: OffsetReset::Earliest,
            format: LogFormat::Auto,
            fields: JsonFields::default(),
            max_event_bytes: 1024,
        }
    }

    fn decoder() -> Decoder {
        Decoder::new(
            &config(),
            "app-logs".into(),
            SourceStats::detached().unwrap(),
        )
    }

    fn secs(time: SystemTime) -> f64 {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    #[test]
    fn lag_counts_from_the_position_to_the_high_watermark() {
        let reset = OffsetReset::Earliest;
        assert_eq!(partition_lag(0, 21, Start::At(3), reset), 18);
        assert_eq!(partition_lag(0, 21, Start::At(21), reset), 0);
        assert_eq!(partition_lag(0, 0, Start::At(0), reset), 0);
        // A position past the watermark (the topic was recreated) is not negative lag.
        assert_eq!(partition_lag(0, 5, Start::At(9), reset), 0);
    }

    #[test]
    fn lag_of_an_unread_or_expired_position_follows_auto_offset_reset() {
        assert_eq!(
            partition_lag(10, 50, Start::Reset, OffsetReset::Earliest),
            40
        );
        assert_eq!(partition_lag(10, 50, Start::Reset, OffsetReset::Latest), 0);
        // Offset 4 was deleted by retention: the consumer restarts at 10 or at 50.
        assert_eq!(
            partition_lag(10, 50, Start::At(4), OffsetReset::Earliest),
            40
        );
        assert_eq!(partition_lag(10, 50, Start::At(4), OffsetReset::Latest), 0);
    }

    #[test]
    fn events_name_topic_and_partition_and_are_counted_by_topic() {
        let mut decoder = decoder();
        let event = decoder.event(b"plain words", 2, None);
        assert_eq!(&*event.source, "kafka:app-logs/2");
        assert_eq!(event.text(), "plain words");
        assert_eq!(
            decoder.stats.bytes.with_label_values(&["app-logs"]).get(),
            11
        );
        let again = decoder.event(b"more", 2, None);
        assert!(Arc::ptr_eq(&event.source, &again.source));
    }

    #[test]
    fn the_record_time_wins_over_the_message_timestamp() {
        let mut decoder = decoder();
        let kafka_time = Some(1_795_623_760_000);
        let text = decoder.event(b"2026-11-25 16:22:38 ERROR boom", 0, kafka_time);
        assert!((secs(text.logged_at.unwrap()) - 1_795_623_758.0).abs() < 1e-3);
        let json = decoder.event(
            br#"{"time": "2026-11-25T16:22:39Z", "message": "boom"}"#,
            0,
            kafka_time,
        );
        assert!((secs(json.logged_at.unwrap()) - 1_795_623_759.0).abs() < 1e-3);
        let untimed = decoder.event(b"Traceback (most recent call last):", 0, kafka_time);
        assert!((secs(untimed.logged_at.unwrap()) - 1_795_623_760.0).abs() < 1e-3);
        let neither = decoder.event(b"Traceback (most recent call last):", 0, None);
        assert_eq!(neither.logged_at, None);
    }

    #[test]
    fn kafka_timestamps_that_are_not_times() {
        assert_eq!(time_from_millis(-1), None);
        assert_eq!(time_from_millis(0), None);
        assert!(time_from_millis(1).is_some());
    }

    #[test]
    fn offsets_are_stored_by_hand_and_reset_as_configured() {
        let client = client_config(&config());
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(client.get("enable.auto.commit"), Some("true"));
        assert_eq!(client.get("auto.offset.reset"), Some("earliest"));
        let latest = client_config(&KafkaLogConfig {
            auto_offset_reset: OffsetReset::Latest,
            ..config()
        });
        assert_eq!(latest.get("auto.offset.reset"), Some("latest"));
    }
}
