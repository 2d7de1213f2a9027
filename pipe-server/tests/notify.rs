//! Notify hooks over https, from a real `pipe-server` process: the hook's
//! certificate is verified against the system's roots, here the hook CA
//! given by `SSL_CERT_FILE`; a hook whose certificate no root vouches for is
//! refused, the reason in the job's state.
#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use restpipe_tests::{InstalledServer, IssueRequest, Pki, Role, get, send};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// An https hook with a certificate for 127.0.0.1 from `pki`: the bodies
/// it received, and its URL.
async fn https_hook(pki: &Pki) -> (Arc<Mutex<Vec<Value>>>, String) {
    let issued = pki.issue(IssueRequest {
        ips: vec!["127.0.0.1".parse().unwrap()],
        ..IssueRequest::new("hook.test", Role::Server)
    });
    let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorder = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, recorder) = (acceptor.clone(), recorder.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return; // a client that does not trust us
                };
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let recorder = recorder.clone();
                    async move {
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        recorder
                            .lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap());
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (calls, url)
}

/// Submits a job for a client that never comes, with `hook`, cancels it,
/// and waits until its hook has been called (or failed) once: its state.
async fn cancelled_job_notifying(installed: &InstalledServer, hook: &str) -> Value {
    let url = installed.url("/client/away/time");
    let accepted = send(
        "GET",
        &url,
        &[("Prefer", "respond-async"), ("X-Pipe-Notify", hook)],
        "",
    )
    .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let at = format!("/_pipe/jobs/{}", accepted.json()["id"].as_str().unwrap());
    assert_eq!(
        send("DELETE", &installed.url(&at), &[], "").await.status,
        200
    );
    let started = Instant::now();
    loop {
        let status = get(&installed.url(&format!("{at}/status"))).await.json();
        if status["notify"]["attempts"].as_u64() >= Some(1) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the hook was never called: {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_hook_is_called_when_the_system_roots_vouch_for_it() {
    let (trusted_ca, stranger_ca) = (Pki::new(), Pki::new());
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, trusted_ca.ca_pem()).unwrap();
    let mut installed = InstalledServer::new(env!("CARGO_BIN_EXE_pipe-server"));
    let state = tempfile::tempdir().unwrap();
    installed.add_args(["--state-dir", state.path().to_str().unwrap()]);
    installed.add_env("SSL_CERT_FILE", roots.to_str().unwrap());
    let _server = installed.start().await;

    let (calls, hook) = https_hook(&trusted_ca).await;
    let status = cancelled_job_notifying(&installed, &hook).await;
    assert_eq!(status["notify"]["state"], "sent", "{status}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["state"], "cancelled");

    let (strange_calls, strange_hook) = https_hook(&stranger_ca).await;
    let status = cancelled_job_notifying(&installed, &strange_hook).await;
    assert_eq!(
        status["notify"]["state"], "pending",
        "retried later: {status}"
    );
    let error = status["notify"]["error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    assert!(strange_calls.lock().unwrap().is_empty());
}
