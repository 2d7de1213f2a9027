//! A node's metrics read the way Prometheus reads them: scraped over HTTP
//! and parsed by a real parser of the text exposition format, the
//! Prometheus project's Python client (`prometheus_client.parser`, from
//! PyPI's `prometheus-client`; `.ci/run` installs it), run as a child
//! process. A machine without it fails the test, saying so.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::http::get;

/// The parser's side: reads the exposition on stdin, writes its families
/// as JSON on stdout; exit status 3 when the parser is not installed.
const PARSER: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as error:
    sys.stderr.write(f"{error}\n")
    sys.exit(3)
families = [
    {
        "name": family.name,
        "type": family.type,
        "help": family.documentation,
        "samples": [
            {"name": sample.name, "labels": sample.labels, "value": sample.value}
            for sample in family.samples
        ],
    }
    for family in text_string_to_metric_families(sys.stdin.read())
]
json.dump(families, sys.stdout)
"#;

/// The `Content-Type` Prometheus expects of the text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One sample: a name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`restpipe_events_sent_total`,
    /// `restpipe_request_duration_seconds_count`...).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A family of samples, as the parser groups them under `# TYPE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family's name (the parser leaves a counter's `_total` off).
    pub name: String,
    /// `counter`, `gauge`, `histogram`...
    pub kind: String,
    /// Its help line.
    pub help: String,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// Every family of one scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Scrape {
    /// In the order the node wrote them.
    pub families: Vec<Family>,
}

/// `GET url` (a node's `/_pipe/metrics` or its metrics listener's
/// `/metrics`): answered 200 in the text format, and parsed.
pub async fn scrape(url: &str) -> Scrape {
    let response = get(url).await;
    assert_eq!(response.status, 200, "GET {url}: {response:?}");
    assert_eq!(response.content_type(), TEXT_FORMAT, "GET {url}");
    let text = std::str::from_utf8(&response.body)
        .unwrap_or_else(|e| panic!("GET {url}: the metrics are not UTF-8: {e}"));
    Scrape::parse(text)
}

impl Scrape {
    /// `text` as Python's `prometheus_client` parses it; panics if it does
    /// not parse, or if the parser is not installed.
    pub fn parse(text: &str) -> Self {
        let mut python = Command::new("python3")
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 for the Prometheus text parser: {e}"));
        if let Some(mut stdin) = python.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("writing the metrics to the parser: {e}"));
        }
        let output = python
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for the parser: {e}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => {}
            Some(3) => panic!(
                "the Prometheus text parser is not installed ({}): \
                 `pip install prometheus-client` (.ci/run installs it)",
                stderr.trim()
            ),
            _ => panic!(
                "the Prometheus text parser refused the metrics ({}):\n{stderr}\n{text}",
                output.status
            ),
        }
        let families: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("the parser's answer is not JSON: {e}"));
        let families = families
            .as_array()
            .unwrap_or_else(|| panic!("the parser's answer is no list: {families}"))
            .iter()
            .map(family)
            .collect();
        Self { families }
    }

    /// The family named `name` (a counter's without `_total`), if present.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|family| family.name == name)
    }

    /// Every sample of every family.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.iter().flat_map(|family| &family.samples)
    }

    /// The value of the sample `name` with exactly `labels`, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self.samples()
            .find(|sample| sample.name == name && sample.labels == labels)
            .map(|sample| sample.value)
    }

    /// The value of the sample `name` with exactly `labels`; panics
    /// (failing the test) if there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            let near: Vec<_> = self
                .samples()
                .filter(|sample| sample.name == name)
                .collect();
            panic!("no sample {name} {labels:?}; of that name: {near:#?}")
        })
    }

    /// The sum of the samples `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples()
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
            })
            .map(|sample| sample.value)
            .sum()
    }
}

fn family(value: &Value) -> Family {
    let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
    let samples = value["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("a family without samples: {value}"))
        .iter()
        .map(|sample| Sample {
            name: sample["name"].as_str().unwrap_or_default().to_owned(),
            labels: sample["labels"]
                .as_object()
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(key, value)| {
                            (key.clone(), value.as_str().unwrap_or_default().to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default(),
            value: sample["value"]
                .as_f64()
                .unwrap_or_else(|| panic!("a sample without a number: {sample}")),
        })
        .collect();
    Family {
        name: text("name"),
        kind: text("type"),
        help: text("help"),
        samples,
    }
}
