//! Scraping a node's metrics the way Prometheus does: a plain HTTP `GET /metrics` to the
//! address the daemon listens on inside the node's namespace ([`scrape`]), and a strict
//! reader of the text exposition ([`Exposition::parse`]) that refuses what a Prometheus
//! server would refuse, and samples without a `# TYPE` before them (tapwire's daemons
//! always type their families): a family typed twice, a
//! counter not ending in `_total`, a histogram whose buckets are not cumulative or whose
//! `+Inf` bucket is not its count, a malformed name, label or value.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::netns::Netns;

/// Where a lab node's `tapwire-dataplane` serves metrics (its namespace's loopback).
pub const DATAPLANE_METRICS_ADDR: &str = "127.0.0.1:9101";
/// Where a lab node's `tapwire-control` serves metrics.
pub const CONTROL_METRICS_ADDR: &str = "127.0.0.1:9102";

/// How long a scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// `GET path` from inside `netns` to `addr`, with `accept` as the `Accept` header (if
/// any); the whole answer (the server closes the connection).
pub fn http_get(netns: &Netns, addr: &str, path: &str, accept: Option<&str>) -> Result<HttpAnswer> {
    let target: SocketAddr = addr
        .parse()
        .map_err(|_| LabError::Invalid(format!("{addr} is not an address:port")))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tapwire-lab\r\n");
    if let Some(accept) = accept {
        request.push_str(&format!("Accept: {accept}\r\n"));
    }
    request.push_str("\r\n");
    let raw = netns.run(move || {
        let mut stream = TcpStream::connect_timeout(&target, SCRAPE_TIMEOUT)?;
        stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
        stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok(raw)
    })?;
    let what = format!("GET http://{addr}{path} in {}", netns.name());
    let text = String::from_utf8(raw).map_err(|e| LabError::Parse {
        what: what.clone(),
        reason: format!("not UTF-8: {e}"),
        output: String::new(),
    })?;
    parse_answer(&text).ok_or_else(|| LabError::Parse {
        what,
        reason: "not an HTTP/1.1 answer".into(),
        output: text.clone(),
    })
}

fn parse_answer(text: &str) -> Option<HttpAnswer> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .strip_prefix("HTTP/1.1 ")?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let mut headers = BTreeMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Scrapes `addr` (one of [`DATAPLANE_METRICS_ADDR`], [`CONTROL_METRICS_ADDR`]) inside
/// `netns` as Prometheus' text format and reads it; a status other than 200, another
/// content type or an exposition that does not parse is an error.
pub fn scrape(netns: &Netns, addr: &str) -> Result<Exposition> {
    let answer = http_get(netns, addr, "/metrics", None)?;
    let what = format!("the metrics at {addr} in {}", netns.name());
    let content_type = answer
        .headers
        .get("content-type")
        .cloned()
        .unwrap_or_default();
    if answer.status != 200 || !content_type.starts_with("text/plain; version=0.0.4") {
        return Err(LabError::Parse {
            what,
            reason: format!("status {}, content type {content_type:?}", answer.status),
            output: answer.body,
        });
    }
    Exposition::parse(&answer.body).map_err(|reason| LabError::Parse {
        what,
        reason,
        output: answer.body.clone(),
    })
}

/// One sample: a series and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: each family's type and help, and every sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Family name → type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
    pub types: BTreeMap<String, String>,
    pub help: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Reads Prometheus' text format 0.0.4 strictly (see the module docs).
    pub fn parse(text: &str) -> std::result::Result<Exposition, String> {
        let mut out = Exposition::default();
        for (n, line) in text.lines().enumerate() {
            let at = |reason: String| format!("line {}: {reason}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or_else(|| at("no type".into()))?;
                check_name(name).map_err(at)?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(at(format!("unknown type {kind}")));
                }
                if kind == "counter" && !name.ends_with("_total") {
                    return Err(at("a counter's name must end in _total".into()));
                }
                if out.types.insert(name.into(), kind.into()).is_some() {
                    return Err(at("family typed twice".into()));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                check_name(name).map_err(at)?;
                out.help.insert(name.into(), help.into());
                continue;
            }
            if line.starts_with('#') {
                continue; // a comment
            }
            let sample = parse_sample(line).map_err(at)?;
            if family_of(&sample.name, &out.types).is_none() {
                return Err(at("a sample of no typed family".into()));
            }
            out.samples.push(sample);
        }
        out.check_histograms()?;
        Ok(out)
    }

    /// Each histogram series: buckets cumulative, `+Inf` present and equal to `_count`.
    fn check_histograms(&self) -> std::result::Result<(), String> {
        for (family, _) in self.types.iter().filter(|(_, t)| *t == "histogram") {
            let bucket = format!("{family}_bucket");
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self.samples.iter().filter(|s| s.name == bucket) {
                let mut labels = s.labels.clone();
                let le = labels
                    .remove("le")
                    .ok_or_else(|| format!("{bucket} without le"))?;
                let le: f64 = parse_value(&le).map_err(|e| format!("{bucket} le: {e}"))?;
                series.entry(labels).or_default().push((le, s.value));
            }
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                    return Err(format!("{family}{labels:?}: buckets not cumulative"));
                }
                let inf = buckets.last().filter(|b| b.0.is_infinite()).map(|b| b.1);
                let count = self.value(&format!("{family}_count"), &labels_of(&labels));
                if inf.is_none() || inf != count {
                    return Err(format!(
                        "{family}{labels:?}: +Inf bucket {inf:?} is not the count {count:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The value of the series `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The sum over every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|got| got == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// The families' names.
    pub fn families(&self) -> BTreeSet<&str> {
        self.types.keys().map(String::as_str).collect()
    }
}

fn labels_of(labels: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The typed family a sample belongs to: its own name, or a histogram's or summary's
/// `_bucket`/`_sum`/`_count`.
fn family_of<'t>(sample: &str, types: &'t BTreeMap<String, String>) -> Option<&'t str> {
    if let Some((name, _)) = types.get_key_value(sample) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = sample.strip_suffix(suffix)?;
        let (name, kind) = types.get_key_value(base)?;
        (kind == "histogram" || (kind == "summary" && *suffix != "_bucket"))
            .then_some(name.as_str())
    })
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

fn parse_value(text: &str) -> std::result::Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse()
            .map_err(|_| format!("{text:?} is not a number")),
    }
}

/// `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> std::result::Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            // A label name, `=`, a quoted value, then `,` or `}`.
            let start = chars.peek().map(|(i, _)| *i).ok_or("unterminated labels")?;
            if after[start..].starts_with('}') {
                chars.next();
                break;
            }
            let eq = after[start..].find('=').ok_or("a label without =")? + start;
            let key = &after[start..eq];
            if key.is_empty()
                || key.starts_with(|c: char| c.is_ascii_digit())
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!("{key:?} is not a label name"));
            }
            while chars.next_if(|(i, _)| *i <= eq).is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key}: value not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("label {key}: bad escape {other:?}")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(format!("label {key}: unterminated value")),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            match chars.next().map(|(_, c)| c) {
                Some(',') => {}
                Some('}') => break,
                other => return Err(format!("after label {key}: {other:?}")),
            }
        }
        let consumed = chars.peek().map_or(after.len(), |(i, _)| *i);
        rest = &after[consumed..];
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or("no value")?)?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("{timestamp:?} is not a timestamp"))?;
    }
    if fields.next().is_some() || !rest.starts_with(' ') {
        return Err("malformed sample".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP tapwire_x_total Things.\n\
        # TYPE tapwire_x_total counter\n\
        tapwire_x_total{endpoint=\"k8s/a\\\"b\",direction=\"rx\"} 3\n\
        tapwire_x_total{endpoint=\"k8s/c\",direction=\"rx\"} 4 1700000000000\n\
        # TYPE tapwire_up gauge\n\
        tapwire_up 1\n\
        # TYPE tapwire_seconds histogram\n\
        tapwire_seconds_sum{op=\"get\"} 0.5\n\
        tapwire_seconds_count{op=\"get\"} 2\n\
        tapwire_seconds_bucket{le=\"0.1\",op=\"get\"} 1\n\
        tapwire_seconds_bucket{le=\"+Inf\",op=\"get\"} 2\n";

    #[test]
    fn a_good_exposition_reads_back() {
        let e = Exposition::parse(GOOD).unwrap();
        assert_eq!(
            e.value(
                "tapwire_x_total",
                &[("endpoint", "k8s/a\"b"), ("direction", "rx")]
            ),
            Some(3.0)
        );
        assert_eq!(e.sum("tapwire_x_total", &[("direction", "rx")]), 7.0);
        assert_eq!(e.value("tapwire_up", &[]), Some(1.0));
        assert_eq!(
            e.value("tapwire_seconds_count", &[("op", "get")]),
            Some(2.0)
        );
        assert_eq!(e.types["tapwire_seconds"], "histogram");
        assert_eq!(e.help["tapwire_x_total"], "Things.");
    }

    #[test]
    fn what_prometheus_would_refuse_is_refused() {
        for (bad, why) in [
            ("tapwire_up 1\n", "no TYPE"),
            (
                "# TYPE tapwire_x counter\ntapwire_x 1\n",
                "counter without _total",
            ),
            ("# TYPE a gauge\n# TYPE a gauge\n", "typed twice"),
            ("# TYPE a gauge\na{b=\"c\" 1\n", "unterminated labels"),
            ("# TYPE a gauge\na{b=c} 1\n", "unquoted"),
            ("# TYPE a gauge\na{1b=\"c\"} 1\n", "bad label name"),
            ("# TYPE a gauge\na{b=\"c\",b=\"d\"} 1\n", "label twice"),
            ("# TYPE a gauge\na one\n", "bad value"),
            ("# TYPE a gauge\na 1 2 3\n", "extra field"),
            ("# TYPE 9a gauge\n", "bad name"),
            ("# TYPE a widget\n", "bad type"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
                "not cumulative",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n",
                "no +Inf",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
                "+Inf is not count",
            ),
        ] {
            assert!(
                Exposition::parse(bad).is_err(),
                "{why}: {bad:?} was accepted"
            );
        }
    }

    #[test]
    fn http_answers_split_into_status_headers_and_body() {
        let a = parse_answer(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
        )
        .unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["content-type"], "text/plain");
        assert_eq!(a.body, "hi");
        assert!(parse_answer("garbage").is_none());
    }
}
