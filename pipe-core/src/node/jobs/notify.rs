//! Calling notify hooks: each ended job with `X-Pipe-Notify` gets a `POST`
//! of its final state (the JSON of `GET /_pipe/jobs/<id>/status`) to that
//! URL. A call that fails (no connection, no answer within
//! [`NOTIFY_TIMEOUT`], a status other than 2xx) is retried with exponential
//! backoff, at most [`NOTIFY_ATTEMPTS`] calls in all; how it went is kept on
//! the job (`notify` in its state). Calls are due in the store, so a
//! restart resumes them (a call cut by the stop is made again: a hook may
//! hear of a job twice, never not at all while attempts remain).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::deliver::Jobs;
use super::notifying::{Called, Notice};
use super::store::now_ms;
use crate::node::metrics::Counter;
use crate::wire::cause_chain;

/// Calls of one hook, the first included.
pub const NOTIFY_ATTEMPTS: u32 = 8;
/// How long one call may take.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often due calls are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Calls under way at once.
const AT_ONCE: usize = 16;

type HookClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

impl Jobs {
    /// Calls the notify hooks that are due, until `stop`.
    pub(super) async fn call_hooks(self: Arc<Self>, stop: CancellationToken) {
        let client: HookClient = match connector() {
            Ok(connector) => Client::builder(TokioExecutor::new()).build(connector),
            Err(error) => {
                // ring offers every safe default: not expected to happen.
                warn!("notify hooks are off, no TLS client: {error}");
                return;
            }
        };
        let calling_ids = Arc::new(Mutex::new(HashSet::new()));
        let mut calls = JoinSet::new();
        loop {
            while calls.try_join_next().is_some() {}
            let room = AT_ONCE.saturating_sub(calls.len());
            match self.store().notices_due(now_ms(), AT_ONCE) {
                Ok(due) => {
                    for notice in due.into_iter().take(room) {
                        let key = (notice.due_ms, notice.id.clone());
                        if !lock(&calling_ids).insert(key.clone()) {
                            continue; // its call is under way
                        }
                        let (jobs, client, ids) =
                            (self.clone(), client.clone(), calling_ids.clone());
                        calls.spawn(async move {
                            jobs.call_hook(&client, notice).await;
                            lock(&ids).remove(&key);
                        });
                    }
                }
                Err(error) => warn!("cannot read the notify hooks due: {error}"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }

    /// Makes one call of `notice`'s hook and records how it went.
    async fn call_hook(&self, client: &HookClient, notice: Notice) {
        let job = match self.store().get(&notice.id) {
            Ok(Some(job)) => job,
            Ok(None) => {
                // Purged meanwhile: nothing left to tell about.
                let gone = Called::Failed {
                    error: "the job was purged".to_owned(),
                    retry_at_ms: None,
                };
                let _ = self.store().notified(notice, gone).await;
                return;
            }
            Err(error) => {
                warn!(job = %notice.id, "cannot read the job to notify: {error}");
                return;
            }
        };
        let url = job.notify.clone().unwrap_or_default();
        let body = job.status_json().to_string();
        let called = match post(client, &url, &job.id, body).await {
            Ok(()) => {
                debug!(job = %job.id, %url, "notify hook called");
                self.metrics.incr(Counter::NotifySent);
                Called::Sent
            }
            Err(error) => {
                let attempt = notice.attempts + 1;
                let retry_at_ms = (attempt < NOTIFY_ATTEMPTS).then(|| {
                    let delay = retry_delay(attempt);
                    now_ms().saturating_add(delay.as_millis() as u64)
                });
                warn!(job = %job.id, %url, attempt, "notify hook failed: {error}");
                self.metrics.incr(match retry_at_ms {
                    Some(_) => Counter::NotifyFailed,
                    None => Counter::NotifyGaveUp,
                });
                Called::Failed { error, retry_at_ms }
            }
        };
        if let Err(error) = self.store().notified(notice, called).await {
            warn!(job = %job.id, "cannot record the notify hook's call: {error}");
        }
    }
}

/// Connects to hooks over http, or https verified against the system's
/// roots (none found: https calls fail, saying the certificate is unknown).
fn connector() -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let tls = match builder.clone().with_native_roots() {
        Ok(builder) => builder.with_no_client_auth(),
        Err(error) => {
            warn!("no system root certificates for https notify hooks: {error}");
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build())
}

/// POSTs `body` to `url`; `Err` says why it did not succeed.
async fn post(client: &HookClient, url: &str, id: &str, body: String) -> Result<(), String> {
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, crate::wire::JSON)
        .header("x-pipe-job", id)
        .body(Full::new(Bytes::from(body)))
        .map_err(|error| format!("not a URL to call: {error}"))?;
    match tokio::time::timeout(NOTIFY_TIMEOUT, client.request(request)).await {
        Err(_) => Err(format!("no answer within {NOTIFY_TIMEOUT:?}")),
        Ok(Err(error)) => Err(cause_chain(&error)),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!("answered {}", response.status())),
    }
}

/// The delay before call `attempt + 1` (attempt ≥ 1): 1 s, doubling, at
/// most a minute, jittered.
fn retry_delay(attempt: u32) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(60))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_minute() {
        let first = retry_delay(1);
        assert!(
            first >= Duration::from_secs(1) && first <= Duration::from_secs(2),
            "{first:?}"
        );
        let late = retry_delay(NOTIFY_ATTEMPTS);
        assert!(
            late >= Duration::from_secs(60) && late <= Duration::from_secs(120),
            "{late:?}"
        );
    }
}
