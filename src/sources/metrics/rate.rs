//! Counters read at each scrape turned into rates per second: pure, fed the
//! scrape's time and samples, so that resets, new series and gaps are tested
//! without a clock or a server.
//!
//! The increase of one series between two scrapes is the difference of its values,
//! or, when the value went down (the process restarted), its new value: the counter
//! started again from zero since the last scrape. That is how Prometheus' `rate()`
//! reads resets. Two signals that a reset happened even though the value did not go
//! down are honoured too, because a migration deploy restarts the application, which
//! is exactly when dropguard is watching:
//!
//! - the `<name>_created` sample prometheus_client (and so django-prometheus) serves
//!   beside each `<name>_total`: a different creation time is a new counter;
//! - `process_start_time_seconds`: a different start time is a new process, all of
//!   whose counters started from zero.
//!
//! A series seen for the first time counts its whole value as its increase, unlike
//! Prometheus' `rate()`, which needs two samples of a series. prometheus_client
//! creates a labelled series at its first increment, so the first HTTP 500 after a
//! deploy shows up as a new `status="500"` series with the value 1: ignoring new
//! series would hide exactly the errors dropguard is there to see. A series that
//! disappears is remembered for [`FORGET_AFTER`], so a brief absence followed by its
//! return does not count its whole history again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::exposition::Sample;
use super::selector::Selector;

/// How long the last value of a series that is no longer served is kept. As
/// Prometheus' staleness lookback: past it, a returning series is a new one.
pub const FORGET_AFTER: Duration = Duration::from_secs(5 * 60);

/// The sample whose change means the process behind the endpoint restarted.
const PROCESS_START: &str = "process_start_time_seconds";

/// One selector's rate over the time between two scrapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    /// The selector as written.
    pub series: String,
    /// Never negative.
    pub per_second: f64,
}

/// The state between scrapes of one endpoint.
#[derive(Debug)]
pub struct CounterRates {
    selectors: Vec<Selector>,
    /// When the last scrape that was read happened; `None` before the first.
    last_at: Option<Instant>,
    last_process_start: Option<f64>,
    /// Every series any selector matches, by name and sorted labels.
    series: HashMap<SeriesKey, Seen>,
}

type SeriesKey = (String, Vec<(String, String)>);

/// A series by borrowed name (without `_created`) and sorted labels.
type CreatedKey<'a> = (&'a str, Vec<&'a (String, String)>);

#[derive(Debug)]
struct Seen {
    value: f64,
    /// The `_created` sample's value, when the endpoint serves one.
    created: Option<f64>,
    at: Instant,
}

impl CounterRates {
    pub fn new(selectors: Vec<Selector>) -> Self {
        Self {
            selectors,
            last_at: None,
            last_process_start: None,
            series: HashMap::new(),
        }
    }

    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }

    /// Reads one scrape taken at `at`; returns one rate per selector, in their
    /// order, or nothing for the first scrape (there is no interval yet).
    ///
    /// Samples whose value is NaN or infinite are skipped: a counter cannot hold
    /// them, and one would turn the sum into nonsense.
    pub fn observe(&mut self, at: Instant, samples: &[Sample]) -> Vec<Rate> {
        if self.last_at.is_some_and(|before| at <= before) {
            // No time passed: no interval to divide by. The state is left as it was,
            // so whatever grew shows at the next read.
            return Vec::new();
        }
        let process_start = samples
            .iter()
            .find(|s| s.name == PROCESS_START && s.labels.is_empty())
            .map(|s| s.value);
        if let (Some(before), Some(now)) = (self.last_process_start, process_start)
            && before != now
        {
            self.series.clear();
        }
        let created: HashMap<CreatedKey, f64> = samples
            .iter()
            .filter_map(|s| {
                let base = s.name.strip_suffix("_created")?;
                let mut labels: Vec<_> = s.labels.iter().collect();
                labels.sort();
                Some(((base, labels), s.value))
            })
            .collect();

        let mut increases = vec![0.0; self.selectors.len()];
        for sample in samples {
            if !sample.value.is_finite() {
                continue;
            }
            let matching: Vec<usize> = (0..self.selectors.len())
                .filter(|&i| self.selectors[i].matches(&sample.name, &sample.labels))
                .collect();
            if matching.is_empty() {
                continue;
            }
            let mut labels = sample.labels.clone();
            labels.sort();
            let created = sample.name.strip_suffix("_total").and_then(|base| {
                created
                    .get(&(base, labels.iter().collect::<Vec<_>>()))
                    .copied()
            });
            let key = (sample.name.clone(), labels);
            let increase = match self.series.get(&key) {
                None => sample.value,
                Some(seen) => {
                    let recreated = matches!((seen.created, created), (Some(a), Some(b)) if a != b);
                    if recreated || sample.value < seen.value {
                        sample.value
                    } else {
                        sample.value - seen.value
                    }
                }
            }
            .max(0.0);
            self.series.insert(
                key,
                Seen {
                    value: sample.value,
                    created,
                    at,
                },
            );
            for i in matching {
                increases[i] += increase;
            }
        }
        self.series
            .retain(|_, seen| at.saturating_duration_since(seen.at) <= FORGET_AFTER);
        if process_start.is_some() {
            self.last_process_start = process_start;
        }

        let Some(before) = self.last_at.replace(at) else {
            return Vec::new();
        };
        let elapsed = at.saturating_duration_since(before).as_secs_f64();
        self.selectors
            .iter()
            .zip(increases)
            .map(|(selector, increase)| Rate {
                series: selector.text().to_string(),
                per_second: increase / elapsed,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::metrics::parse_selector;

    const ERRORS: &str = r#"http_total{status=~"5.."}"#;

    fn tracker(selectors: &[&str]) -> CounterRates {
        CounterRates::new(
            selectors
                .iter()
                .map(|text| parse_selector(text).unwrap())
                .collect(),
        )
    }

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            timestamp_ms: None,
        }
    }

    fn http(status: &str, value: f64) -> Sample {
        sample("http_total", &[("status", status)], value)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn rates(rates: &[Rate]) -> Vec<f64> {
        rates.iter().map(|r| r.per_second).collect()
    }

    #[test]
    fn the_first_scrape_gives_no_rate_then_increase_over_elapsed() {
        let mut t = tracker(&[ERRORS]);
        let t0 = Instant::now();
        assert_eq!(
            t.observe(t0, &[http("200", 100.0), http("500", 10.0)]),
            vec![]
        );
        let second = t.observe(t0 + secs(10), &[http("200", 900.0), http("500", 40.0)]);
        assert_eq!(
            second,
            vec![Rate {
                series: ERRORS.to_string(),
                per_second: 3.0
            }]
        );
        // Series matching one selector are summed.
        let third = t.observe(
            t0 + secs(15),
            &[http("200", 900.0), http("500", 45.0), http("503", 5.0)],
        );
        assert_eq!(rates(&third), vec![(5.0 + 5.0) / 5.0]);
        // Nothing new: a zero rate, still reported (it is how a spike is seen to end).
        let fourth = t.observe(
            t0 + secs(20),
            &[http("200", 950.0), http("500", 45.0), http("503", 5.0)],
        );
        assert_eq!(rates(&fourth), vec![0.0]);
    }

    #[test]
    fn a_reset_counts_the_new_value_per_series() {
        let mut t = tracker(&[ERRORS]);
        let t0 = Instant::now();
        t.observe(t0, &[http("500", 1000.0), http("502", 10.0)]);
        // 500 restarted and climbed to 4; 502 kept counting (+2).
        let after = t.observe(t0 + secs(2), &[http("500", 4.0), http("502", 12.0)]);
        assert_eq!(rates(&after), vec![(4.0 + 2.0) / 2.0]);
        // A restart to zero is no negative rate.
        let zero = t.observe(t0 + secs(4), &[http("500", 0.0), http("502", 0.0)]);
        assert_eq!(rates(&zero), vec![0.0]);
    }

    #[test]
    fn new_series_count_whole_and_vanished_ones_are_remembered() {
        let mut t = tracker(&[ERRORS]);
        let t0 = Instant::now();
        t.observe(t0, &[http("200", 5.0)]);
        // The first 500 creates its series.
        let first = t.observe(t0 + secs(1), &[http("200", 6.0), http("500", 1.0)]);
        assert_eq!(rates(&first), vec![1.0]);
        // It vanishes for a scrape (no rate from it) ...
        let gone = t.observe(t0 + secs(2), &[http("200", 7.0)]);
        assert_eq!(rates(&gone), vec![0.0]);
        // ... and returns: only its growth since it was last seen counts.
        let back = t.observe(t0 + secs(4), &[http("200", 8.0), http("500", 3.0)]);
        assert_eq!(rates(&back), vec![1.0]);
        // Gone for longer than FORGET_AFTER, it is a new series again.
        let later = t0 + secs(4) + FORGET_AFTER + secs(1);
        t.observe(later, &[http("200", 8.0)]);
        let reborn = t.observe(later + secs(1), &[http("500", 7.0)]);
        assert_eq!(rates(&reborn), vec![7.0]);
    }

    #[test]
    fn a_new_process_start_time_is_a_reset_of_every_series() {
        let mut t = tracker(&[ERRORS]);
        let t0 = Instant::now();
        let start = |v| sample(PROCESS_START, &[], v);
        t.observe(t0, &[start(1000.0), http("500", 40.0)]);
        // Restarted; no 500 yet, so the series is missing from this scrape.
        t.observe(t0 + secs(1), &[start(2000.0)]);
        // 100 errors since the restart: more than the old 40, yet all of them count.
        let after = t.observe(t0 + secs(2), &[start(2000.0), http("500", 100.0)]);
        assert_eq!(rates(&after), vec![100.0]);
    }

    #[test]
    fn a_new_created_time_is_a_reset() {
        let mut t = tracker(&[ERRORS]);
        let t0 = Instant::now();
        let created = |status, v| sample("http_created", &[("status", status)], v);
        t.observe(t0, &[http("500", 40.0), created("500", 1000.0)]);
        let same = t.observe(t0 + secs(1), &[http("500", 42.0), created("500", 1000.0)]);
        assert_eq!(rates(&same), vec![2.0]);
        let recreated = t.observe(t0 + secs(2), &[http("500", 50.0), created("500", 1500.0)]);
        assert_eq!(rates(&recreated), vec![50.0]);
    }

    #[test]
    fn each_selector_has_its_rate_and_odd_values_are_skipped() {
        let mut t = tracker(&[ERRORS, r#"http_total{status="500"}"#, "absent_total"]);
        let t0 = Instant::now();
        t.observe(t0, &[http("500", 1.0), http("503", 1.0)]);
        let next = t.observe(
            t0 + Duration::from_millis(500),
            &[
                http("500", 3.0),
                http("503", 2.0),
                http("504", f64::NAN),
                http("599", f64::INFINITY),
            ],
        );
        assert_eq!(
            next.iter().map(|r| r.series.as_str()).collect::<Vec<_>>(),
            vec![ERRORS, r#"http_total{status="500"}"#, "absent_total"]
        );
        assert_eq!(rates(&next), vec![6.0, 4.0, 0.0]);
    }

    #[test]
    fn two_reads_at_one_instant_lose_nothing() {
        let mut t = tracker(&[ERRORS]);
        let t0 = Instant::now();
        t.observe(t0, &[http("500", 1.0)]);
        assert_eq!(t.observe(t0, &[http("500", 2.0)]), vec![]);
        assert_eq!(
            rates(&t.observe(t0 + secs(1), &[http("500", 3.0)])),
            vec![2.0]
        );
    }
}
