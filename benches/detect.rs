//! Benchmark of detection: the time from the event that crosses the threshold to
//! the incident journaled on disk, and the cost of an ordinary event.
//!
//!     cargo bench --bench detect [-- RUNS]      (default 300)
//!
//! Each run builds a detector with ten minutes of background (an ordinary error
//! every 2 s, as a busy app logs), a deploy that dropped a column, then
//! `min_errors - 1` errors naming it; the measured step is the last error: the
//! detector's decision plus the incident's journal write (temporary file, fsync,
//! rename, directory fsync), exactly what the daemon does before reading the
//! next event.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dropguard::detect::incident::{
    Change, DeployInfo, DeployedMigration, DroppedObject, SnapshotRef,
};
use dropguard::detect::{Detector, Settings, Signatures};
use dropguard::event::{DeployOrigin, Event, Payload, Record};
use dropguard::incidents::Store;

const MISSING: &str = "2026-11-25 16:09:18,123 ERROR django.request Internal Server Error: /catalog/\nTraceback (most recent call last):\n  File \"/srv/app/catalog/views.py\", line 9, in index\nsqlite3.OperationalError: no such column: catalog_product.brand_code\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \"/srv/app/catalog/views.py\", line 9, in index\ndjango.db.utils.OperationalError: no such column: catalog_product.brand_code";
const ORDINARY: &str = "2026-11-25 16:09:18,123 ERROR django.request Internal Server Error: /cart/\nTraceback (most recent call last):\n  File \"/srv/app/cart/views.py\", line 12, in cart\nKeyError: 'basket'";

fn event(text: &str) -> Event {
    Event {
        source: Arc::from("file:/var/log/app/web.log"),
        observed_at: SystemTime::now(),
        logged_at: None,
        written_by: None,
        payload: Payload::Log(Record {
            message: text.into(),
            level: None,
            fields: None,
            truncated: false,
        }),
    }
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::new(dir.path());
    let settings = Settings {
        environment: "bench".into(),
        window: Duration::from_secs(60),
        min_errors: 5,
        spike_factor: 3.0,
        watch_for: Duration::from_secs(1800),
    };
    let (ordinary, missing) = (event(ORDINARY), event(MISSING));
    let base = SystemTime::now();
    let mut crossing = Vec::with_capacity(runs);
    let mut decide_only = Vec::with_capacity(runs);
    let mut per_event = Vec::new();
    for _ in 0..runs {
        let mut detector = Detector::new(settings.clone(), Signatures::built_in());
        let started = Instant::now();
        for s in 0..300u64 {
            detector.observe(&ordinary, base + Duration::from_secs(2 * s));
        }
        per_event.push(started.elapsed().as_secs_f64() / 300.0);
        let deployed = base + Duration::from_secs(600);
        detector.deploy(deploy(deployed), deployed);
        for i in 0..4u64 {
            detector.observe(&missing, deployed + Duration::from_secs(1 + i));
        }
        let at = deployed + Duration::from_secs(5);
        let started = Instant::now();
        let outcome = detector.observe(&missing, at);
        let decided = started.elapsed();
        let incident = outcome
            .opened
            .first()
            .expect("the fifth error opens the incident");
        store.save(incident).expect("journaling");
        crossing.push(started.elapsed().as_secs_f64());
        decide_only.push(decided.as_secs_f64());
    }
    report(
        "threshold-crossing event → incident journaled",
        &mut crossing,
    );
    report(
        "threshold-crossing event → incident decided (no disk)",
        &mut decide_only,
    );
    report("ordinary error event (per event)", &mut per_event);
}

fn deploy(at: SystemTime) -> DeployInfo {
    DeployInfo {
        at: at.into(),
        origins: vec![DeployOrigin::DjangoMigrations],
        release: None,
        migrations: vec![DeployedMigration {
            migration: "catalog.0016_remove_product_brand".into(),
            previous: Some("0015_delete_digitalproduct".into()),
            rollback_command: Some(
                "python manage.py migrate catalog 0015_delete_digitalproduct".into(),
            ),
            destructive: true,
            snapshot: Some(SnapshotRef {
                id: "01KAXYZ0000000000000000000".into(),
                rows: 1000,
            }),
            objects: vec![DroppedObject {
                table: "catalog_product".into(),
                columns: vec!["brand_code".into()],
                change: Change::Dropped,
                migration: "catalog.0016_remove_product_brand".into(),
            }],
            in_use: Vec::new(),
        }],
        more_migrations: 0,
    }
}

fn report(what: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] * 1e6;
    println!(
        "{what}: n={} p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
