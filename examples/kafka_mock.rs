//! librdkafka's mock cluster as a process of its own, for benchmarks that need
//! a Kafka broker beside a dropguard under test (`benches/idle.sh`): prints the
//! bootstrap servers on its first line, then serves until its stdin closes.
//!
//!     cargo run --example kafka_mock -- TOPIC [PARTITIONS]

use std::io::Read;

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, Producer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "app-logs".to_string());
    let partitions: i32 = args.next().map_or(Ok(1), |p| p.parse())?;
    let producer: FutureProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()?;
    let cluster = producer
        .client()
        .mock_cluster()
        .ok_or("test.mock.num.brokers gave no mock cluster")?;
    cluster.create_topic(&topic, partitions, 1)?;
    println!("{}", cluster.bootstrap_servers());
    drop(cluster);
    // Serve until whoever started us closes our stdin (or dies).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(producer);
    Ok(())
}
