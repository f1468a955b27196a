//! Prometheus' HTTP API for instant queries: the URL of `/api/v1/query`, and its
//! JSON answer summed into one number.

use serde::Deserialize;
use url::Url;

use super::MetricsError;
use super::exposition::parse_float;

/// `<base>/api/v1/query?query=<query>`. A path prefix on the base (Prometheus
/// behind `--web.route-prefix` or a proxy) and its own query parameters (a token)
/// are kept. The error never shows the URL, which may hold a secret.
pub fn query_url(base: &str, query: &str) -> Result<Url, String> {
    let mut url = Url::parse(base).map_err(|err| format!("the URL does not parse ({err})"))?;
    if !url.path().trim_end_matches('/').ends_with("/api/v1/query") {
        url.path_segments_mut()
            .map_err(|()| "the URL cannot take a path".to_string())?
            .pop_if_empty()
            .extend(["api", "v1", "query"]);
    }
    url.query_pairs_mut().append_pair("query", query);
    Ok(url)
}

/// What an instant query returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The sum of every finite value returned; 0 for an empty vector (no series
    /// matched: no errors).
    pub value: f64,
    /// How many values were summed.
    pub summed: usize,
    /// Prometheus' warnings (a partial answer, say), to be logged.
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorSample>),
    Scalar(ValuePair),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    value: Option<ValuePair>,
    /// Set instead of `value` for native histograms.
    #[serde(default)]
    histogram: Option<serde_json::Value>,
}

/// `[<unix time>, "<value>"]`.
#[derive(Deserialize)]
struct ValuePair(serde::de::IgnoredAny, String);

/// Reads an answer of `/api/v1/query` with its HTTP status.
pub fn read_answer(status: u16, body: &[u8]) -> Result<Answer, MetricsError> {
    let response: Response = match serde_json::from_slice(body) {
        Ok(response) => response,
        Err(_) if status != 200 => {
            return Err(MetricsError::Status {
                status,
                detail: String::new(),
            });
        }
        Err(err) => {
            return Err(MetricsError::Answer(format!(
                "the answer is not Prometheus API JSON ({err}); is the URL Prometheus' base URL, like http://prometheus:9090?"
            )));
        }
    };
    if response.status != "success" {
        let what = format!(
            "Prometheus refused the query ({}): {}",
            response.error_type.as_deref().unwrap_or("no error type"),
            response.error.as_deref().unwrap_or("no message")
        );
        return Err(if status != 200 {
            MetricsError::Status {
                status,
                detail: format!(": {what}"),
            }
        } else {
            MetricsError::Answer(what)
        });
    }
    if status != 200 {
        return Err(MetricsError::Status {
            status,
            detail: String::new(),
        });
    }
    let data = response
        .data
        .ok_or_else(|| MetricsError::Answer("the answer has no data".to_string()))?;
    let data: Data = serde_json::from_value(data)
        .map_err(|err| MetricsError::Answer(format!("the answer's data is unreadable ({err})")))?;
    let values: Vec<String> = match data {
        Data::Scalar(ValuePair(_, value)) => vec![value],
        Data::Vector(samples) => samples
            .into_iter()
            .map(|sample| match (sample.value, sample.histogram) {
                (Some(ValuePair(_, value)), _) => Ok(value),
                (None, Some(_)) => Err(MetricsError::Answer(
                    "the query returns native histograms; write one that returns a number per second, like sum(rate(<counter>[1m]))".to_string(),
                )),
                (None, None) => Err(MetricsError::Answer("a vector sample has no value".to_string())),
            })
            .collect::<Result<_, _>>()?,
        Data::Matrix(_) => {
            return Err(MetricsError::Answer(
                "the query returns a range vector (matrix); wrap the range in a function, like sum(rate(<counter>[1m]))".to_string(),
            ));
        }
        Data::String(_) => {
            return Err(MetricsError::Answer(
                "the query returns a string; it must return a number per second".to_string(),
            ));
        }
    };
    let mut sum = 0.0;
    let mut summed = 0;
    for text in &values {
        let value = parse_float(text)
            .ok_or_else(|| MetricsError::Answer(format!("the value {text:?} is not a number")))?;
        if value.is_finite() {
            sum += value;
            summed += 1;
        }
    }
    if summed == 0 && !values.is_empty() {
        return Err(MetricsError::Answer(format!(
            "every value the query returned is NaN or infinite ({}); a rate of a counter over a range longer than the scrape interval avoids that",
            values.join(", ")
        )));
    }
    Ok(Answer {
        value: sum,
        summed,
        warnings: response.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_url_keeps_prefix_and_parameters() {
        let q = r#"sum(rate(http_total{status=~"5.."}[1m]))"#;
        let url = query_url("http://prom:9090", q).unwrap();
        assert_eq!(url.path(), "/api/v1/query");
        assert_eq!(url.query_pairs().find(|(k, _)| k == "query").unwrap().1, q);
        let prefixed = query_url("https://ops.example/prometheus/?token=s3cret", "up").unwrap();
        assert_eq!(prefixed.path(), "/prometheus/api/v1/query");
        assert_eq!(prefixed.query(), Some("token=s3cret&query=up"));
        let already = query_url("http://prom:9090/api/v1/query", "up").unwrap();
        assert_eq!(already.path(), "/api/v1/query");
        let err = query_url("not a url/s3cret", "up").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn vectors_are_summed_and_an_empty_one_is_zero() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"status":"500"},"value":[1795623758.5,"0.25"]},
            {"metric":{"status":"503"},"value":[1795623758.5,"1.5"]},
            {"metric":{"status":"504"},"value":[1795623758.5,"NaN"]}]}}"#;
        let answer = read_answer(200, body).unwrap();
        assert_eq!(answer.value, 1.75);
        assert_eq!(answer.summed, 2);
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":["partial"]}"#;
        let answer = read_answer(200, empty).unwrap();
        assert_eq!(answer.value, 0.0);
        assert_eq!(answer.warnings, vec!["partial".to_string()]);
    }

    #[test]
    fn a_scalar_is_its_value() {
        let body =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1795623758,"+Inf"]}}"#;
        let err = read_answer(200, body).unwrap_err();
        assert!(err.to_string().contains("NaN or infinite"), "{err}");
        let body =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1795623758,"2e-1"]}}"#;
        assert_eq!(read_answer(200, body).unwrap().value, 0.2);
    }

    #[test]
    fn refusals_and_wrong_shapes_are_reported_with_their_message() {
        let refused = br#"{"status":"error","errorType":"bad_data","error":"1:10: parse error: unclosed left parenthesis"}"#;
        let err = read_answer(400, refused).unwrap_err();
        assert_eq!(err.kind(), "scrape");
        assert!(err.to_string().contains("HTTP 400"), "{err}");
        assert!(err.to_string().contains("bad_data"), "{err}");
        assert!(
            err.to_string().contains("unclosed left parenthesis"),
            "{err}"
        );

        let err = read_answer(503, b"<html>Service Unavailable</html>").unwrap_err();
        assert_eq!(err.kind(), "scrape");
        assert!(err.to_string().contains("HTTP 503"), "{err}");

        for (body, fragment) in [
            (&b"not json"[..], "not Prometheus API JSON"),
            (
                br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
                "range vector",
            ),
            (
                br#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#,
                "returns a string",
            ),
            (
                br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{}]}]}}"#,
                "native histograms",
            ),
            (
                br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"lots"]}]}}"#,
                "is not a number",
            ),
            (br#"{"status":"success"}"#, "no data"),
            (
                br#"{"status":"error","errorType":"execution","error":"query timed out"}"#,
                "query timed out",
            ),
        ] {
            let err = read_answer(200, body).unwrap_err();
            assert_eq!(err.kind(), "parse", "{err}");
            assert!(err.to_string().contains(fragment), "{err} does not say {fragment:?}");
        }
    }
}
