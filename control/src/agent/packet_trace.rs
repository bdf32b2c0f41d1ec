//! `tapwirectl trace`: arms a packet trace in this node's dataplane (through the sync
//! thread, which owns the connection) and collects its records until the dataplane ends
//! it or the time is up. The dataplane keeps the trace armed for the same time, so a
//! trace nobody waits for any more ends by itself.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use tapwire_proto::{TraceRequest, MAX_TRACE_PACKETS};

use super::sync::TraceEvent;
use super::Shared;
use crate::api::{codes, ApiError, TraceReport};

/// The longest a trace may wait for its packets.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// How much longer than the trace the agent waits for the dataplane to say it ended.
const GRACE: Duration = Duration::from_secs(2);

/// Traces the next `count` packets (from or to `pod`, when given) for up to `timeout_ms`.
pub(super) fn trace(
    shared: &Shared,
    count: u32,
    pod: Option<&str>,
    timeout_ms: u64,
) -> Result<TraceReport, ApiError> {
    let bad = |msg: String| ApiError::new(codes::BAD_REQUEST, msg, "");
    if !(1..=MAX_TRACE_PACKETS).contains(&count) {
        return Err(bad(format!(
            "cannot trace {count} packets: ask for 1 to {MAX_TRACE_PACKETS}"
        )));
    }
    let wait = Duration::from_millis(timeout_ms);
    if wait.is_zero() || wait > MAX_WAIT {
        return Err(bad(format!(
            "cannot trace for {timeout_ms} ms: wait at least 1 ms and at most {} s",
            MAX_WAIT.as_secs()
        )));
    }
    let endpoint = pod.map(|pod| endpoint_of(shared, pod)).transpose()?;
    let events = shared.sync.trace(TraceRequest {
        trace_id: 0,
        count,
        endpoint: endpoint.clone().unwrap_or_default(),
        timeout_ms: u32::try_from(timeout_ms).unwrap_or(u32::MAX),
    });
    let deadline = Instant::now() + wait + GRACE;
    let mut records = Vec::new();
    let (ended, dropped) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(TraceEvent::Record(record)) => records.push(*record),
            Ok(TraceEvent::Done(done)) if done.reason == "refused" => {
                return Err(ApiError::new(
                    codes::BAD_REQUEST,
                    "the dataplane refused the trace",
                    done.error,
                ))
            }
            Ok(TraceEvent::Done(done)) => break (done.reason, done.dropped),
            Err(RecvTimeoutError::Timeout) => break ("timeout".to_string(), 0),
            Err(RecvTimeoutError::Disconnected) if records.is_empty() => {
                return Err(ApiError::new(
                    codes::TRY_AGAIN_LATER,
                    "the dataplane is not connected",
                    format!(
                        "no trace without tapwire-dataplane at {}",
                        shared.config.dataplane_socket.display()
                    ),
                ))
            }
            Err(RecvTimeoutError::Disconnected) => break ("disconnected".to_string(), 0),
        }
    };
    Ok(TraceReport {
        endpoint,
        count,
        records,
        ended,
        dropped,
    })
}

/// The dataplane's key (`orchestrator/workload/endpoint`) of this node's endpoint `pod`
/// names: the key itself, the workload (`namespace/name`) or the pod's name alone, when
/// only one pod of this node has it.
fn endpoint_of(shared: &Shared, pod: &str) -> Result<String, ApiError> {
    let node = &shared.config.node;
    let desired = shared.desired().ok_or_else(|| {
        ApiError::new(
            codes::TRY_AGAIN_LATER,
            "this node's state is not computed yet",
            "retry in a moment",
        )
    })?;
    let found: Vec<&String> = desired
        .endpoints
        .iter()
        .filter(|(key, ep)| {
            key.as_str() == pod
                || ep.workload_id == pod
                || ep
                    .workload_id
                    .rsplit_once('/')
                    .is_some_and(|(_, name)| name == pod)
        })
        .map(|(key, _)| key)
        .collect();
    match found[..] {
        [key] => Ok(key.clone()),
        [] => Err(ApiError::new(
            codes::BAD_REQUEST,
            format!("no pod {pod:?} on node {node}"),
            "name one of this node's pods (name, namespace/name, or its endpoint as \
             tapwirectl stats shows it)",
        )),
        _ => Err(ApiError::new(
            codes::BAD_REQUEST,
            format!("{pod:?} names several pods on node {node}"),
            format!(
                "{}; give namespace/name or the endpoint",
                found
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}
