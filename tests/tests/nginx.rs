//! The shipped nginx site configs in front of both nodes, with a real nginx
//! and real curl, as the original's README used them:
//! `curl http://rpclient.local/server/time` on a client's host and
//! `curl http://rpserver.local/client/<name>/time` on the server's.
//!
//! The site files are used as shipped, except for the listen port and the
//! socket paths, which point into a temporary directory (nothing outside it
//! is touched). Names resolve to 127.0.0.1 through curl's `--resolve`.
//! When nginx is not installed the test says so; under CI it fails instead,
//! since `.ci/run` installs nginx.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use restpipe_tests::{
    BackoffSettings, HttpAddr, HttpListener, NodeOptions, Pki, Registry, RunningNode, Side,
    SocketOptions, eventually, fast_settings, init_logging, launch_client, launch_server,
};

const CLIENT: &str = "branch-office-7";

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Kills nginx however the test ends.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A shipped site file, pointed at `port` and at the sockets in `dir`.
fn site(name: &str, port: u16, dir: &Path) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../nginx")
            .join(name),
    )
    .unwrap();
    assert!(
        shipped.contains("listen 80;"),
        "{name} no longer listens on 80"
    );
    shipped
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace(
            "/tmp/rpserver.sock",
            &dir.join("rpserver.sock").display().to_string(),
        )
        .replace(
            "/tmp/rpclient.sock",
            &dir.join("rpclient.sock").display().to_string(),
        )
}

fn start_nginx(binary: &Path, dir: &Path, port: u16) -> Nginx {
    for name in ["rpserver.local.conf", "rpclient.local.conf"] {
        std::fs::write(dir.join(name), site(name, port, dir)).unwrap();
    }
    for temp in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(temp)).unwrap();
    }
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         include {d}/rpserver.local.conf;\n  include {d}/rpclient.local.conf;\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let check = Command::new(binary)
        .args(["-t", "-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx rejects the shipped configs: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let nginx = Nginx(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx
}

/// curl through nginx, resolving `host` to 127.0.0.1 like an /etc/hosts entry.
fn curl(host: &str, port: u16, path: &str) -> (u16, String, String) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("http://{host}:{port}{path}"))
        .output()
        .expect("curl is installed");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

async fn dev_node_front(path: &Path) -> HttpListener {
    let dev = SocketOptions {
        mode: 0o666,
        ..SocketOptions::default()
    };
    HttpListener::bind_with(&HttpAddr::Unix(path.to_owned()), &dev)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_original_curl_examples_work_through_nginx_both_ways() {
    let Some(binary) = nginx_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is not installed, but .ci/run installs it: the CI set-up is broken"
        );
        eprintln!(
            "SKIPPED: nginx is not installed here (apt-get install nginx); CI runs this test"
        );
        return;
    };
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let pipe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pipe_addr = pipe.local_addr().unwrap();
    let server: RunningNode = launch_server(
        pipe,
        dev_node_front(&dir.path().join("rpserver.sock")).await,
        &pki.server(),
        NodeOptions::new(Registry::with_examples(Side::Server), fast_settings()),
    )
    .unwrap();
    let client: RunningNode = launch_client(
        pipe_addr,
        dev_node_front(&dir.path().join("rpclient.sock")).await,
        &pki.client(CLIENT),
        NodeOptions {
            handlers: Registry::with_examples(Side::Client),
            settings: fast_settings(),
            backoff: BackoffSettings::default(),
            ..NodeOptions::default()
        },
    )
    .unwrap();
    let peers = server.node().peers();
    eventually(Duration::from_secs(10), "client connected", || {
        peers.get(CLIENT).is_some()
    })
    .await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _nginx = start_nginx(&binary, dir.path(), port);

    let results = tokio::task::spawn_blocking(move || {
        [
            curl("rpclient.local", port, "/server/time"),
            curl("rpclient.local", port, "/server/cat//hello%20/world"),
            curl("rpserver.local", port, &format!("/client/{CLIENT}/time")),
            curl(
                "rpserver.local",
                port,
                &format!("/client/{CLIENT}/cat//hello%20/world"),
            ),
            curl("rpserver.local", port, "/favicon.ico"),
            curl("rpclient.local", port, "/_pipe/health"),
        ]
    })
    .await
    .unwrap();
    let [time_s, cat_s, time_c, cat_c, favicon, health] = results;

    assert_eq!(time_s.0, 200, "{time_s:?}");
    assert!(
        time_s
            .1
            .to_ascii_lowercase()
            .contains("x-event-return-code: 0")
    );
    let value: serde_json::Value = serde_json::from_str(&time_s.2).unwrap();
    assert!(value["time_from_server"].as_f64().unwrap() > 1.0e9);
    assert_eq!(
        (cat_s.0, cat_s.2.as_str()),
        (200, r#"{"result_from_server":"hello world"}"#)
    );
    assert_eq!(time_c.0, 200, "{time_c:?}");
    let value: serde_json::Value = serde_json::from_str(&time_c.2).unwrap();
    assert!(value["time_from_client"].as_f64().unwrap() > 1.0e9);
    assert_eq!(
        (cat_c.0, cat_c.2.as_str()),
        (200, r#"{"result_from_client":"hello world"}"#)
    );
    assert_eq!(favicon.0, 404, "nginx answers /favicon.ico itself");
    assert!(
        health.2.contains(CLIENT),
        "rpclient.local reaches the client node: {}",
        health.2
    );

    // Each node's unix socket is the dev profile's: world-connectable.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("rpserver.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666);
    drop(client);
    drop(server);
}
