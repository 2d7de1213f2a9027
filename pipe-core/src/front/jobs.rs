//! Asynchronous jobs over the local front (RFC 7240 `Prefer:
//! respond-async`): a piped request becomes a job, answered `202` with its
//! `Location` once it is on disk; `/_pipe/jobs/<id>` answers its state, and,
//! once it has ended, the very response the synchronous call would have
//! given.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::access::{forbidden, refuse_out_of_scope};
use super::response::{
    RETURN_CODE_HEADER, ResponseBody, error_response, file_body, full, json_response,
    method_not_allowed,
};
use super::tokens::ApiToken;
use crate::node::Node;
use crate::node::jobs::{JobRecord, JobRequest, JobResult, JobState, NewJob, Refused, Submitted};
use crate::node::metrics::Counter;
use crate::wire::Event;

/// Where jobs are.
pub(super) const JOBS_PATH: &str = "/_pipe/jobs";
/// The header naming a finished job's state.
const JOB_STATE_HEADER: &str = "x-pipe-job-state";
/// Longest `?wait=` honoured, in seconds.
const MAX_WAIT_SECONDS: f64 = 60.0;
/// How often a waiting poll looks again.
const WAIT_STEP: Duration = Duration::from_millis(500);
/// Longest `X-Pipe-Expires`, in seconds: a year.
const MAX_EXPIRY_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
/// Most jobs one listing returns.
const MAX_PAGE: usize = 1000;

/// `Prefer` (RFC 7240), made once: a `&str` name is parsed on every lookup.
const PREFER: http::HeaderName = http::HeaderName::from_static("prefer");

/// Whether the caller asks for an asynchronous answer (`Prefer:
/// respond-async`, among other preferences or not).
pub(super) fn wants_async(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(PREFER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|preference| {
            preference
                .split(';')
                .next()
                .is_some_and(|token| token.trim().eq_ignore_ascii_case("respond-async"))
        })
}

/// What a submission says about its job beyond the request.
pub(super) struct JobOptions {
    notify: Option<String>,
    expires_in: Duration,
    idempotency_key: Option<String>,
    at_most_once: bool,
}

/// Reads the job headers of a submission; an `Err` says why it is refused
/// (400).
pub(super) fn job_options(node: &Node, headers: &http::HeaderMap) -> Result<JobOptions, String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        match headers.get(name).map(|value| value.to_str()) {
            None => Ok(None),
            Some(Ok(value)) => Ok(Some(value.trim().to_owned())),
            Some(Err(_)) => Err(format!("{name} is not visible ASCII")),
        }
    };
    let notify = text("x-pipe-notify")?;
    if let Some(url) = &notify
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(format!(
            "X-Pipe-Notify must be an http or https URL, not {url:?}"
        ));
    }
    let expires_in = match text("x-pipe-expires")? {
        None => node.settings().job_expiry,
        Some(seconds) => match seconds.parse::<f64>() {
            Ok(seconds) if seconds > 0.0 && seconds <= MAX_EXPIRY_SECONDS => {
                Duration::from_secs_f64(seconds)
            }
            _ => {
                return Err(format!(
                    "X-Pipe-Expires must be seconds, more than 0 and at most a year, not {seconds:?}"
                ));
            }
        },
    };
    let idempotency_key = text("idempotency-key")?.filter(|key| !key.is_empty());
    if idempotency_key.as_ref().is_some_and(|key| key.len() > 256) {
        return Err("Idempotency-Key is longer than 256 characters".to_owned());
    }
    let at_most_once = match text("x-pipe-delivery")?.as_deref() {
        None | Some("at-least-once") => false,
        Some("at-most-once") => true,
        Some(other) => {
            return Err(format!(
                "X-Pipe-Delivery is at-least-once or at-most-once, not {other:?}"
            ));
        }
    };
    Ok(JobOptions {
        notify,
        expires_in,
        idempotency_key,
        at_most_once,
    })
}

/// Queues `event` for `peer` as a job: `202` once it is on disk, with its
/// `Location`. A streamed body is taken whole first, up to `limit` bytes
/// and by `deadline`; `timeout` is how long each run may take.
pub(super) async fn submit(
    node: &Node,
    peer: &str,
    mut event: Event,
    (limit, deadline, timeout): (usize, tokio::time::Instant, Duration),
    options: JobOptions,
) -> Response<ResponseBody> {
    let Some(jobs) = node.jobs() else {
        return error_response(
            StatusCode::NOT_IMPLEMENTED,
            "this node keeps no jobs: start it with a state directory (--state-dir) to accept Prefer: respond-async",
        );
    };
    // A job keeps its body whole, on disk, until it is delivered.
    if let Some(stream) = event.stream.take() {
        event.body = match tokio::time::timeout_at(deadline, stream.collect(limit)).await {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => return error_response(StatusCode::PAYLOAD_TOO_LARGE, error),
            Err(_) => {
                return error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive within the request's deadline",
                );
            }
        };
    }
    let handler = event.handler.as_str().to_owned();
    let (verb, noun) = event.handler.into_parts();
    let request = JobRequest {
        verb,
        noun,
        args: event.args,
        query: event.query,
        content_type: event.content_type,
        headers: event
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let new = NewJob {
        peer: peer.to_owned(),
        handler,
        request,
        body: event.body.to_vec(),
        expires_in_ms: u64::try_from(options.expires_in.as_millis()).unwrap_or(u64::MAX),
        notify: options.notify,
        idempotency_key: options.idempotency_key,
        at_most_once: options.at_most_once,
    };
    let job = match jobs.store().submit(new).await {
        Ok(Submitted::Created(job)) => {
            node.metrics().incr(Counter::JobAccepted);
            job
        }
        Ok(Submitted::Existing(job)) => job,
        Ok(Submitted::QueueFull { queued }) => {
            node.metrics().incr(Counter::JobRefused);
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the job queue for {peer:?} is full ({queued} jobs); try again later"),
            );
        }
        Err(error) => {
            return error_response(
                store_status(&error),
                format!("the job could not be stored: {error}"),
            );
        }
    };
    jobs.wake();
    let mut response = json_response(StatusCode::ACCEPTED, &job.status_json());
    if let Ok(location) = HeaderValue::from_str(&format!("{JOBS_PATH}/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// Answers a request under `/_pipe/jobs`. With an API `token`, a job is
/// seen and cancelled only within the token's scope, as the piped request
/// that made it would be, and purging takes a token that covers everything.
pub(super) async fn respond(
    node: &Node,
    request: Request<Incoming>,
    token: Option<&ApiToken>,
    caller: &str,
) -> Response<ResponseBody> {
    let Some(jobs) = node.jobs() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "this node keeps no jobs (no state directory)",
        );
    };
    let path = request.uri().path();
    let rest = path.strip_prefix(JOBS_PATH).unwrap_or_default();
    let query = request.uri().query().unwrap_or_default();
    let method = request.method().clone();
    let store = jobs.store();
    if rest.is_empty() || rest == "/" {
        return match method {
            Method::GET => list(node, query, token),
            _ => method_not_allowed("GET"),
        };
    }
    if rest == "/purge" {
        return match method {
            Method::POST => match token.filter(|token| !token.is_unrestricted()) {
                Some(token) => forbidden(
                    &format!(
                        "API token {:?} may not purge jobs: that takes a token for every handler and client (\"*\")",
                        token.name()
                    ),
                    caller,
                ),
                None => purge(node, query).await,
            },
            _ => method_not_allowed("POST"),
        };
    }
    let rest = &rest[1..];
    let (id, status_only) = match rest.strip_suffix("/status") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error_response(StatusCode::NOT_FOUND, format!("no job {id:?}"));
    }
    if token.is_some() {
        match store.get(id) {
            Ok(Some(job)) => {
                if let Some(refused) = refuse_out_of_scope(token, &job.handler, &job.peer, caller) {
                    return refused;
                }
            }
            Ok(None) => return error_response(StatusCode::NOT_FOUND, format!("no job {id:?}")),
            Err(error) => return store_error(&error),
        }
    }
    match (method, status_only) {
        (Method::GET, true) => match store.get(id) {
            Ok(Some(job)) => json_response(StatusCode::OK, &job.status_json()),
            Ok(None) => error_response(StatusCode::NOT_FOUND, format!("no job {id:?}")),
            Err(error) => store_error(&error),
        },
        (Method::GET, false) => poll(node, id, query).await,
        (Method::DELETE, false) => match jobs.cancel(id).await {
            Ok(Ok(job)) => json_response(StatusCode::OK, &job.status_json()),
            Ok(Err(Refused::Unknown)) => {
                error_response(StatusCode::NOT_FOUND, format!("no job {id:?}"))
            }
            Ok(Err(Refused::State { from })) => error_response(
                StatusCode::CONFLICT,
                format!("job {id} has already ended ({from})"),
            ),
            Err(error) => store_error(&error),
        },
        (_, true) => method_not_allowed("GET"),
        _ => method_not_allowed("GET, DELETE"),
    }
}

/// `GET /_pipe/jobs/<id>[?wait=S]`.
async fn poll(node: &Node, id: &str, query: &str) -> Response<ResponseBody> {
    let Some(jobs) = node.jobs() else {
        return error_response(StatusCode::NOT_FOUND, "this node keeps no jobs");
    };
    let wait = match query_value(query, "wait").map(|text| text.parse::<f64>()) {
        None => Duration::ZERO,
        Some(Ok(seconds)) if seconds >= 0.0 => {
            Duration::from_secs_f64(seconds.min(MAX_WAIT_SECONDS))
        }
        Some(_) => {
            return error_response(StatusCode::BAD_REQUEST, "wait must be seconds, at least 0");
        }
    };
    let until = tokio::time::Instant::now() + wait;
    loop {
        // Registered before the look, so an end right after it wakes us.
        let ended = jobs.some_job_ended();
        tokio::pin!(ended);
        ended.as_mut().enable();
        let job = match jobs.store().get(id) {
            Ok(Some(job)) => job,
            Ok(None) => return error_response(StatusCode::NOT_FOUND, format!("no job {id:?}")),
            Err(error) => return store_error(&error),
        };
        if job.state.is_final() || tokio::time::Instant::now() >= until || node.is_stopping() {
            return answer(node, &job);
        }
        tokio::select! {
            _ = ended => {}
            // Also looked at now and then: for the deadline, and a stop.
            _ = tokio::time::sleep(WAIT_STEP.min(until.saturating_duration_since(tokio::time::Instant::now()))) => {}
        }
    }
}

/// Forgets the jobs that ended more than `older_than` seconds ago (default
/// 0: every ended job), with their results: `{"purged": N}`.
async fn purge(node: &Node, query: &str) -> Response<ResponseBody> {
    let Some(jobs) = node.jobs() else {
        return error_response(StatusCode::NOT_FOUND, "this node keeps no jobs");
    };
    let older_than = match query_value(query, "older_than").map(|text| text.parse::<f64>()) {
        None => Duration::ZERO,
        Some(Ok(seconds)) if (0.0..=MAX_EXPIRY_SECONDS).contains(&seconds) => {
            Duration::from_secs_f64(seconds)
        }
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "older_than must be seconds, at least 0",
            );
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    // Ended at or before the cutoff: a job that ended this very millisecond
    // goes with a purge of everything.
    let cutoff = now_ms.saturating_sub(older_than.as_millis() as u64) + 1;
    match jobs.store().purge(cutoff).await {
        Ok(purged) => {
            let _ = jobs.store().remove_orphan_results().await;
            json_response(StatusCode::OK, &serde_json::json!({ "purged": purged }))
        }
        Err(error) => store_error(&error),
    }
}

/// The body of `job`'s `result`: from the store, or streamed from its
/// result file.
fn result_body(
    node: &Node,
    job: &JobRecord,
    result: &JobResult,
) -> Result<ResponseBody, Box<Response<ResponseBody>>> {
    let Some(jobs) = node.jobs() else {
        return Ok(full(Bytes::new()));
    };
    if result.body_file.is_none() {
        return match jobs.store().result_body(&job.id) {
            Ok(body) => Ok(full(Bytes::from(body))),
            Err(error) => Err(Box::new(store_error(&error))),
        };
    }
    let path = jobs.store().result_file(&job.id);
    match std::fs::File::open(&path) {
        Ok(file) => Ok(file_body(file)),
        Err(error) => Err(Box::new(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the job's result file {} cannot be read: {error}",
                path.display()
            ),
        ))),
    }
}

/// The answer for `job` as it is now.
fn answer(node: &Node, job: &JobRecord) -> Response<ResponseBody> {
    match (job.state, &job.result) {
        (JobState::Succeeded | JobState::Failed, Some(result)) => {
            let body = match result_body(node, job, result) {
                Ok(body) => body,
                Err(error) => return *error,
            };
            let mut response = Response::new(body);
            *response.status_mut() =
                StatusCode::from_u16(result.http_status).unwrap_or(StatusCode::OK);
            let headers = response.headers_mut();
            for (name, value) in &result.headers {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(value),
                ) {
                    headers.append(name, value);
                }
            }
            headers.insert(RETURN_CODE_HEADER, HeaderValue::from(result.return_code));
            let content_type = HeaderValue::from_str(&result.content_type)
                .ok()
                .filter(|value| !value.is_empty())
                .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
            headers.insert(header::CONTENT_TYPE, content_type);
            if let Some(length) = result.body_file {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
            headers.insert(
                JOB_STATE_HEADER,
                HeaderValue::from_static(job.state.as_str()),
            );
            response
        }
        (JobState::Expired | JobState::Cancelled, _) => {
            json_response(StatusCode::GONE, &job.status_json())
        }
        (JobState::Succeeded | JobState::Failed, None) => {
            json_response(StatusCode::INTERNAL_SERVER_ERROR, &job.status_json())
        }
        _ => json_response(StatusCode::ACCEPTED, &job.status_json()),
    }
}

/// `GET /_pipe/jobs?state=&peer=&limit=&after=`: newest first; with an API
/// `token`, only the jobs in its scope.
fn list(node: &Node, query: &str, token: Option<&ApiToken>) -> Response<ResponseBody> {
    let Some(jobs) = node.jobs() else {
        return error_response(StatusCode::NOT_FOUND, "this node keeps no jobs");
    };
    let state = match query_value(query, "state") {
        None => None,
        Some(name) => match JobState::parse(&name) {
            Some(state) => Some(state),
            None => {
                return error_response(StatusCode::BAD_REQUEST, format!("no job state {name:?}"));
            }
        },
    };
    let limit = match query_value(query, "limit").map(|text| text.parse::<usize>()) {
        None => 100,
        Some(Ok(limit)) if limit > 0 => limit.min(MAX_PAGE),
        Some(_) => {
            return error_response(StatusCode::BAD_REQUEST, "limit must be a positive count");
        }
    };
    let peer = query_value(query, "peer");
    let after = query_value(query, "after");
    match list_visible(jobs.store(), (state, peer.as_deref()), after, limit, token) {
        Ok(found) => {
            let page: Vec<serde_json::Value> = found.iter().map(JobRecord::status_json).collect();
            json_response(StatusCode::OK, &serde_json::json!({ "jobs": page }))
        }
        Err(error) => store_error(&error),
    }
}

/// Up to `limit` jobs after `after` matching `filter` (state, peer), newest
/// first, leaving out those outside `token`'s scope: pages are read until
/// `limit` are found or the store has no more.
fn list_visible(
    store: &crate::node::jobs::JobStore,
    (state, peer): (Option<JobState>, Option<&str>),
    mut after: Option<String>,
    limit: usize,
    token: Option<&ApiToken>,
) -> Result<Vec<JobRecord>, crate::node::jobs::StoreError> {
    let Some(token) = token else {
        return store.list(state, peer, after.as_deref(), limit);
    };
    let mut visible = Vec::new();
    loop {
        let page = store.list(state, peer, after.as_deref(), limit)?;
        let last_page = page.len() < limit;
        after = page.last().map(|job| job.id.clone());
        visible.extend(
            page.into_iter()
                .filter(|job| token.refusal(&job.handler, &job.peer).is_none()),
        );
        if last_page || visible.len() >= limit {
            visible.truncate(limit);
            return Ok(visible);
        }
    }
}

/// The decoded value of `name` in a query string.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn store_error(error: &crate::node::jobs::StoreError) -> Response<ResponseBody> {
    error_response(
        store_status(error),
        format!("the job store failed: {error}"),
    )
}

/// 507 for a full disk, else 503: the store may work again later.
fn store_status(error: &crate::node::jobs::StoreError) -> StatusCode {
    match error {
        crate::node::jobs::StoreError::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}
