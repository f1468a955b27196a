//! One record's bytes (a line, a joined event, a Kafka payload) made into a
//! `Record` as text or JSON, then the masked sample an alert carries.
#![no_main]

use std::sync::LazyLock;

use dropguard::config::{JsonFields, LogFormat};
use dropguard::detect::mask;
use dropguard::sources::{SourceStats, decode_record};
use libfuzzer_sys::fuzz_target;

static STATS: LazyLock<SourceStats> =
    LazyLock::new(|| SourceStats::detached().expect("the counters' names are valid"));

fuzz_target!(|data: &[u8]| {
    let [format, max_hi, max_lo, sample_max, rest @ ..] = data else {
        return;
    };
    let format = match format % 3 {
        0 => LogFormat::Auto,
        1 => LogFormat::Text,
        _ => LogFormat::Json,
    };
    let max_bytes = usize::from(u16::from_be_bytes([*max_hi, *max_lo]));
    let (record, _time) = decode_record(
        rest,
        format,
        &JsonFields::default(),
        max_bytes,
        &STATS,
        "fuzz",
    );
    // Cut when longer than the limit; also when invalid bytes, each replaced by
    // a 3-byte U+FFFD, made it longer. Never otherwise.
    if rest.len() > max_bytes {
        assert!(record.truncated, "{} bytes over {max_bytes} not cut", rest.len());
    } else if record.truncated {
        assert!(
            std::str::from_utf8(rest).is_err(),
            "valid text within the limit marked truncated"
        );
    }
    if record.fields.is_none() {
        // A text record never holds more than the limit.
        assert!(
            record.message.len() <= max_bytes,
            "{} > {max_bytes}",
            record.message.len()
        );
    } else {
        assert_ne!(format, LogFormat::Text, "a text source made a JSON record");
    }
    // The sample an alert carries never exceeds its limit.
    let limit = usize::from(*sample_max);
    let sample = mask::sample(&record.message, limit);
    assert!(
        sample.chars().count() <= limit,
        "{} > {limit}",
        sample.chars().count()
    );
});
