//! A cluster across hosts: the NATS server and two `pipe-server` nodes each
//! on a host of its own (network namespaces joined by a bridge, each with
//! its own address), clients connecting from outside. Every node reaches
//! the other's client across the network. Skipped, saying why, where
//! network namespaces cannot be made.
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use restpipe_tests::netns::Hosts;
use restpipe_tests::nodes::start_client_to;
use restpipe_tests::{
    Nats, NodeOptions, NodeProcess, Pki, Registry, Role, Side, get_within, server_request,
};

const SOON: Duration = Duration::from_secs(15);

/// A `pipe-server` node `node_id` on host `index`, in the cluster on `nats`.
async fn node_on(
    hosts: &Hosts,
    index: usize,
    pki: &Pki,
    nats: &Nats,
    dir: &std::path::Path,
) -> (NodeProcess, SocketAddr, SocketAddr) {
    let node_id = format!("s{index}");
    let certs = dir.join(format!("certs-{node_id}"));
    pki.install(&certs, Role::Server, &pki.issue(server_request()))
        .unwrap();
    let (pipe, http) = (
        SocketAddr::new(hosts.addr(index).into(), 1234),
        SocketAddr::new(hosts.addr(index).into(), 8080),
    );
    let tls = nats.tls();
    let mut command = hosts.command(index, env!("CARGO_BIN_EXE_pipe-server"));
    command
        .env_clear()
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    command
        .args([
            "serve",
            "--listen",
            &pipe.to_string(),
            "--http",
            &http.to_string(),
        ])
        .arg("--cert-dir")
        .arg(&certs)
        .args([
            "--cluster",
            &nats.url(0),
            "--cluster-name",
            "hosts",
            "--node-id",
            &node_id,
        ])
        .arg("--nats-ca")
        .arg(&tls.ca)
        .arg("--nats-cert")
        .arg(&tls.cert)
        .arg("--nats-key")
        .arg(&tls.key)
        .args(["--peer-wait", "1"]);
    let mut process = NodeProcess::spawn(command, &dir.join(format!("{node_id}.log"))).unwrap();
    process
        .wait_healthy(http, SOON)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    (process, pipe, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_nodes_on_hosts_of_their_own_reach_each_others_clients() {
    let hosts = match Hosts::create(3) {
        Ok(hosts) => hosts,
        Err(why) => {
            eprintln!("skipped: network namespaces cannot be made here ({why})");
            return;
        }
    };
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    // NATS on host 0, the server nodes on hosts 1 and 2.
    let nats = Nats::start_on_host(&pki, &hosts, 0).await;
    assert!(
        nats.url(0).contains(&hosts.addr(0).to_string()),
        "{}",
        nats.url(0)
    );
    let (_s1, pipe1, http1) = node_on(&hosts, 1, &pki, &nats, dir.path()).await;
    let (_s2, pipe2, http2) = node_on(&hosts, 2, &pki, &nats, dir.path()).await;

    let options = || NodeOptions {
        handlers: Registry::with_examples(Side::Client),
        ..NodeOptions::default()
    };
    let _c1 = start_client_to(pki.client("c1"), &[pipe1], options()).await;
    let _c2 = start_client_to(pki.client("c2"), &[pipe2], options()).await;

    for (front, client) in [(http2, "c1"), (http1, "c2"), (http1, "c1")] {
        let started = tokio::time::Instant::now();
        loop {
            let time = get_within(&format!("http://{front}/client/{client}/time"), SOON).await;
            if time.status == 200 {
                assert!(time.json()["time_from_client"].is_number(), "{time:?}");
                break;
            }
            assert!(started.elapsed() < SOON, "{client} via {front}: {time:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let peers = get_within(&format!("http://{http1}/_pipe/peers"), SOON)
        .await
        .json();
    let holders: Vec<(&str, &str)> = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|peer| {
            (
                peer["name"].as_str().unwrap(),
                peer["node"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(holders, [("c1", "s1"), ("c2", "s2")], "{peers}");
}
