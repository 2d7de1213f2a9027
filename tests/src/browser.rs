//! A real headless Chromium driven over WebDriver, for the status page:
//! Debian's `chromium` and `chromium-driver` (`.ci/run` installs them),
//! `chromedriver` started on a port the system picks, and a
//! [`fantoccini`] client talking to it over plain HTTP on loopback.
//!
//! Where Chromium is not installed, [`installed`] says so and the test
//! skips; under CI (`CI` set) it fails instead, since `.ci/run` installs
//! it. Each [`Browser`] has a fresh profile directory; dropping it kills
//! chromedriver and the browser it started (their whole process group).

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// Debian's Chromium (package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver (package `chromium-driver`), of the same version.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver may take to say which port it listens on.
const DRIVER_START: Duration = Duration::from_secs(20);

/// Whether Chromium and ChromeDriver are here. Without them, under CI the
/// test fails (the CI set-up is broken); elsewhere it prints why it skips
/// and returns `false`.
pub fn installed() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} not installed, but .ci/run installs them: the CI set-up is broken",
        missing.join(" and ")
    );
    eprintln!(
        "SKIPPED: {} not installed here (apt-get install chromium chromium-driver); CI runs this test",
        missing.join(" and ")
    );
    false
}

/// A headless Chromium session; dropping it kills chromedriver and the
/// browser.
pub struct Browser {
    client: Client,
    driver: Child,
    // Removed on drop, after the browser that writes in it is gone.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a port the system picks and opens a headless
    /// Chromium session with a fresh profile.
    pub async fn start() -> anyhow::Result<Self> {
        let profile = tempfile::tempdir().context("creating a browser profile directory")?;
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // A group of its own, so drop can kill the browsers it starts too.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}"))?;
        let stdout = driver.stdout.take().context("chromedriver's stdout")?;
        let port = match tokio::time::timeout(DRIVER_START, driver_port(stdout)).await {
            Ok(Ok(port)) => port,
            Ok(Err(error)) => {
                kill_group(&mut driver);
                return Err(error);
            }
            Err(_) => {
                kill_group(&mut driver);
                anyhow::bail!("chromedriver did not say its port within {DRIVER_START:?}");
            }
        };
        let options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        let connected = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match connected {
            Ok(client) => client,
            Err(error) => {
                kill_group(&mut driver);
                return Err(error).context("opening a Chromium session through chromedriver");
            }
        };
        Ok(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    /// The WebDriver client: `goto`, `find`, `screenshot`...
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The text of every element `css` selects, in document order, as the
    /// page shows it. Read in one script, all at once: a page that redraws
    /// itself (the status page does, every 2 s) would leave element
    /// references found one command earlier stale.
    pub async fn texts(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let texts = self
            .client
            .execute(
                "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText);",
                vec![json!(css)],
            )
            .await
            .with_context(|| format!("reading {css} in the page"))?;
        serde_json::from_value(texts).context("the texts of the page's elements")
    }

    /// Waits (bounded) until the texts of the elements `css` selects
    /// satisfy `condition`, and returns them; fails the test after `limit`
    /// with what the page showed last.
    pub async fn wait_for_texts(
        &self,
        limit: Duration,
        css: &str,
        what: &str,
        condition: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let started = Instant::now();
        loop {
            let texts = self
                .texts(css)
                .await
                .unwrap_or_else(|error| panic!("{error:#}"));
            if condition(&texts) {
                return texts;
            }
            assert!(
                started.elapsed() < limit,
                "not within {limit:?}: {what}; the page shows {css} = {texts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot of the page as `target/test-artifacts/<name>`
    /// (of the workspace) and returns where.
    pub async fn save_screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .context("taking a screenshot")?;
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        let path = directory.join(name);
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Ends the session (the browser quits), then stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Kills chromedriver's process group (chromedriver and the browser it
/// started) and reaps chromedriver.
fn kill_group(driver: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", driver.id())])
        .stderr(Stdio::null())
        .status();
    let _ = driver.kill();
    let _ = driver.wait();
}

/// Reads chromedriver's stdout until it says `... started successfully on
/// port N.`, then keeps draining it on a thread so it never blocks.
async fn driver_port(mut stdout: std::process::ChildStdout) -> anyhow::Result<u16> {
    let (port_tx, port_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 1024];
        let mut port_tx = Some(port_tx);
        loop {
            let read = match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if port_tx.is_none() {
                continue;
            }
            seen.extend_from_slice(&chunk[..read]);
            if let Some(port) = port_in(&String::from_utf8_lossy(&seen)) {
                if let Some(port_tx) = port_tx.take() {
                    let _ = port_tx.send(port);
                }
                seen.clear();
            }
        }
    });
    port_rx
        .await
        .context("chromedriver exited before saying its port")
}

/// The port in chromedriver's start-up line, once the line is whole.
fn port_in(output: &str) -> Option<u16> {
    let rest = output.split("started successfully on port ").nth(1)?;
    let digits = rest.split('.').next()?;
    // The number is whole only once the full stop after it has arrived.
    rest.contains('.').then_some(())?;
    digits.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::port_in;

    #[test]
    fn reads_the_port_once_the_line_is_whole() {
        assert_eq!(port_in("Starting ChromeDriver 1 on port 0\n"), None);
        assert_eq!(
            port_in("ChromeDriver was started successfully on port 333"),
            None
        );
        assert_eq!(
            port_in("x\nChromeDriver was started successfully on port 33311.\n"),
            Some(33311)
        );
    }
}
