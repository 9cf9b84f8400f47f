//! Every write the speaker makes to the API server is bounded in time and its
//! failures are counted by kind and logged once per outage: an API server that
//! hangs (requests neither answer nor fail) is seen within [`TIMEOUT`], not after
//! the client's five-minute read timeout, and says so once, not once per request.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrolb_common::lock;
use prometheus::IntCounterVec;

/// The longest one API request may take before it counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request failed (the `kind` label of `ferrolb_speaker_api_failures_total`).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No answer within [`TIMEOUT`].
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
    /// The request failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
}

impl Failure {
    /// The metric label: `timeout`, `unreachable` (no connection), `conflict`,
    /// `not_found`, `forbidden`, `server_error` or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout(_) => "timeout",
            Failure::Api(kube::Error::Api(e)) => match e.code {
                404 => "not_found",
                403 | 401 => "forbidden",
                409 => "conflict",
                500..=599 => "server_error",
                _ => "other",
            },
            Failure::Api(kube::Error::HyperError(_) | kube::Error::Service(_)) => "unreachable",
            Failure::Api(_) => "other",
        }
    }
}

/// Every kind, for pre-registering the series (`event_dropped`: an Event not written
/// because the writer's queue was full).
pub const KINDS: [&str; 8] =
    ["timeout", "unreachable", "conflict", "not_found", "forbidden", "server_error", "other", "event_dropped"];

/// The API server's health as the speaker's requests see it.
#[derive(Debug, Clone)]
pub struct Health {
    failures: IntCounterVec,
    state: Arc<Mutex<Outage>>,
    timeout: Duration,
}

#[derive(Debug, Default)]
struct Outage {
    failing: bool,
    count: u64,
}

impl Health {
    /// Health counting into `failures` (`ferrolb_speaker_api_failures_total{kind}`).
    pub fn new(failures: IntCounterVec) -> Health {
        Health { failures, state: Arc::default(), timeout: TIMEOUT }
    }

    /// The same with another bound on each request.
    pub fn with_timeout(self, timeout: Duration) -> Health {
        Health { timeout, ..self }
    }

    /// Run `request` (`what` names it in the log) within [`TIMEOUT`], and record how it went.
    pub async fn call<T>(&self, what: &str, request: impl Future<Output = kube::Result<T>>) -> Result<T, Failure> {
        let r = match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::Api(e)),
            Err(_) => Err(Failure::Timeout(self.timeout)),
        };
        match &r {
            Ok(_) => self.ok(),
            // A conflict or a missing object is an answer: the server is there.
            Err(f @ Failure::Api(kube::Error::Api(e))) if e.code == 409 || e.code == 404 => {
                self.failures.with_label_values(&[f.kind()]).inc();
                self.ok();
            }
            Err(f) => self.failed(what, f),
        }
        r
    }

    fn ok(&self) {
        let mut s = lock(&self.state);
        if s.failing {
            tracing::info!(failed_requests = s.count, "the API server answers again");
            *s = Outage::default();
        }
    }

    fn failed(&self, what: &str, f: &Failure) {
        self.failures.with_label_values(&[f.kind()]).inc();
        let mut s = lock(&self.state);
        s.count += 1;
        if !s.failing {
            s.failing = true;
            tracing::warn!(request = what, kind = f.kind(), error = %f,
                "an API request failed; the speaker keeps announcing, and counts further failures in \
                 ferrolb_speaker_api_failures_total until the API server answers again");
        } else {
            tracing::debug!(request = what, kind = f.kind(), error = %f, "API request failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> (Health, IntCounterVec) {
        let c = IntCounterVec::new(prometheus::Opts::new("f", "f"), &["kind"]).unwrap();
        (Health::new(c.clone()).with_timeout(Duration::from_millis(20)), c)
    }

    #[tokio::test]
    async fn a_request_that_hangs_fails_as_a_timeout_and_is_counted() {
        let (h, c) = health();
        let r: Result<(), Failure> = h.call("test", std::future::pending()).await;
        assert!(matches!(r, Err(Failure::Timeout(_))));
        assert_eq!(c.with_label_values(&["timeout"]).get(), 1);
        assert!(lock(&h.state).failing);
        h.call("test", async { Ok(()) }).await.unwrap();
        assert!(!lock(&h.state).failing, "an answer ends the outage");
    }

    #[tokio::test]
    async fn answers_that_refuse_count_by_kind_but_end_no_outage() {
        let (h, c) = health();
        let api = |code: u16| kube::Error::Api(kube::core::Status::failure("x", "Y").with_code(code).boxed());
        let _ = h.call("test", async { Err::<(), _>(api(409)) }).await;
        let _ = h.call("test", async { Err::<(), _>(api(503)) }).await;
        let _ = h.call("test", async { Err::<(), _>(api(403)) }).await;
        assert_eq!(["conflict", "server_error", "forbidden"].map(|k| c.with_label_values(&[k]).get()), [1, 1, 1]);
        assert!(lock(&h.state).failing, "a 403 is an outage of this speaker's writes");
    }
}
