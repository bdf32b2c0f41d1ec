//! The Prometheus scrape endpoint both daemons serve with `--metrics-addr` (off by
//! default): a small blocking HTTP server ([`ScrapeServer`]) answering `GET /metrics`
//! with the metrics a daemon renders, in the text exposition the scraper asks for
//! ([`Exposition`]: Prometheus 0.0.4 unless its `Accept` header names OpenMetrics).
//!
//! Metrics are built with the official client, [`prometheus_client`] (re-exported so the
//! daemons use one version): the control keeps live histograms and counters in a
//! registry; the dataplane samples its per-worker counters at scrape time and encodes the
//! sample through a collector. What a daemon measures is the daemon's business; this
//! crate only serves and encodes.
//!
//! The server runs on a thread of its own, one connection at a time, with every read and
//! write bounded in time: a scrape never touches a daemon's hot path, and a stuck client
//! holds the endpoint for at most [`IO_TIMEOUT`].

#![deny(unsafe_code)]

mod http;

pub use http::{parse_request, Method, Request, ScrapeServer, IO_TIMEOUT, MAX_REQUEST_BYTES};
pub use prometheus_client;

use prometheus_client::registry::Registry;

/// The text exposition a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// Prometheus' text format 0.0.4 (`text/plain; version=0.0.4`): what `curl` gets.
    Prometheus,
    /// OpenMetrics 1.0 text, for a scraper whose `Accept` header asks for it (Prometheus
    /// itself does).
    OpenMetrics,
}

impl Exposition {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text`, else Prometheus' text format.
    pub fn from_accept(accept: Option<&str>) -> Exposition {
        match accept {
            Some(accept)
                if accept
                    .to_ascii_lowercase()
                    .contains("application/openmetrics-text") =>
            {
                Exposition::OpenMetrics
            }
            _ => Exposition::Prometheus,
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Encodes every metric of `registry` in `exposition` (OpenMetrics ends with `# EOF`).
pub fn encode(registry: &Registry, exposition: Exposition) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    match exposition {
        Exposition::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?
        }
        Exposition::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, registry)?,
    }
    Ok(text)
}

/// Histogram buckets for latencies: `count` upper bounds from `first_seconds`, each
/// twice the one before (with 1 ms and 14 buckets: 1 ms … 8.2 s).
pub fn latency_buckets(first_seconds: f64, count: u16) -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(first_seconds, 2.0, count)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn the_accept_header_picks_the_exposition() {
        assert_eq!(Exposition::from_accept(None), Exposition::Prometheus);
        assert_eq!(Exposition::from_accept(Some("*/*")), Exposition::Prometheus);
        // Prometheus 2.x/3.x scrapers.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::from_accept(Some(prometheus)),
            Exposition::OpenMetrics
        );
        assert!(Exposition::Prometheus
            .content_type()
            .starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn both_expositions_carry_the_counters() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("tapwire_test_events", "Events seen.", counter.clone());
        counter.inc_by(3);
        let text = encode(&registry, Exposition::Prometheus).unwrap();
        assert!(
            text.contains("# TYPE tapwire_test_events_total counter\n"),
            "{text}"
        );
        assert!(text.contains("\ntapwire_test_events_total 3\n"), "{text}");
        let open = encode(&registry, Exposition::OpenMetrics).unwrap();
        assert!(
            open.contains("# TYPE tapwire_test_events counter\n"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
    }

    #[test]
    fn latency_buckets_double() {
        let buckets: Vec<f64> = latency_buckets(0.001, 4).collect();
        assert_eq!(buckets, [0.001, 0.002, 0.004, 0.008]);
    }
}
