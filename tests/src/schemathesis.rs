//! schemathesis (PyPI), run against a live node's local front: it reads
//! the node's own `/_pipe/openapi.json`, generates requests from it
//! (valid and invalid ones) and checks every answer against it. `.ci/run`
//! installs it; where it is missing a test fails under `CI` and is skipped,
//! saying why, elsewhere.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

/// Examples per operation and phase: enough to reach every documented
/// answer of the node's few operations, and a run well under a minute.
pub const MAX_EXAMPLES: u32 = 25;
/// A request with no answer by then is a hung request: a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole run is killed, failing the test, past this.
pub const RUN_LIMIT: Duration = Duration::from_secs(90);
/// The fixed seed, so a CI run is reproducible; `SCHEMATHESIS_SEED`
/// overrides it to look further.
const DEFAULT_SEED: &str = "14";

/// The checks run on every answer: no server error the description does
/// not allow, the status, content type, headers and body as described,
/// invalid input refused, an undescribed method refused with 405.
pub const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,unsupported_method";

/// What a run came to.
#[derive(Debug)]
pub enum Outcome {
    /// schemathesis is not installed; the reason, for the skip message.
    Missing(String),
    /// It ran: whether every check passed, and its output.
    Ran {
        /// Exit status 0.
        passed: bool,
        /// Its standard output and error.
        output: String,
    },
}

/// The installed schemathesis's version line, or why there is none.
pub async fn version() -> Result<String, String> {
    let output = tokio::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .await
        .map_err(|error| format!("schemathesis cannot be run: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "schemathesis --version failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Invalid requests must be refused with a 4xx: besides schemathesis's
/// own list, 408 and 413 are refusals too (a deadline too short for the
/// body to arrive in, a body over the limit).
const REFUSALS: &str = r#"["400", "401", "403", "404", "405", "406", "408", "409", "413", "415", "422", "428", "429", "5xx"]"#;

/// Long polls: a job poll's `wait` holds the request up to 60 s by design
/// (the description says so), which would read as a hung request; the run
/// holds it to a fifth of a second.
const LONG_POLLS: &[(&str, &str)] = &[("pollJob", "query.wait")];

/// A schemathesis configuration allowing, operation by operation, exactly
/// the 5xx statuses `document` describes for it, so `not_a_server_error`
/// fails on any other (and `status_code_conformance` on anything
/// undescribed).
pub fn config_for(document: &Value) -> String {
    let mut config =
        String::from("# Written by restpipe's openapi test from the node's description.\n");
    let paths = document["paths"].as_object().into_iter().flatten();
    for (_, item) in paths {
        let operations = item.as_object().into_iter().flatten();
        for (_, operation) in operations {
            let Some(id) = operation["operationId"].as_str() else {
                continue;
            };
            let mut allowed = vec!["2xx".to_owned(), "3xx".to_owned(), "4xx".to_owned()];
            let responses = operation["responses"].as_object().into_iter().flatten();
            allowed.extend(
                responses
                    .map(|(status, _)| status)
                    .filter(|status| status.starts_with('5'))
                    .cloned(),
            );
            let allowed: Vec<String> = allowed.iter().map(|s| format!("{s:?}")).collect();
            let held = LONG_POLLS
                .iter()
                .filter(|(operation, _)| *operation == id)
                .map(|(_, parameter)| format!("parameters = {{ {parameter:?} = 0.2 }}\n"))
                .collect::<String>();
            let _ = write!(
                config,
                "\n[[operations]]\ninclude-operation-id = {id:?}\nchecks.not_a_server_error.expected-statuses = [{}]\n\
                 checks.negative_data_rejection.expected-statuses = {REFUSALS}\n{held}",
                allowed.join(", ")
            );
        }
    }
    config
}

/// Runs schemathesis against the description at `url` (a node's
/// `/_pipe/openapi.json`; requests go to the same front), with `config`
/// written into `dir`. Bounded: [`MAX_EXAMPLES`] per operation,
/// [`REQUEST_TIMEOUT`] per request, [`RUN_LIMIT`] in all.
pub async fn run(url: &str, config: &str, dir: &Path) -> Outcome {
    if let Err(why) = version().await {
        return Outcome::Missing(why);
    }
    let config_path = dir.join("schemathesis.toml");
    if let Err(error) = std::fs::write(&config_path, config) {
        panic!("writing {}: {error}", config_path.display());
    }
    let log_path = dir.join("schemathesis.log");
    let log = match std::fs::File::create(&log_path) {
        Ok(log) => log,
        Err(error) => panic!("creating {}: {error}", log_path.display()),
    };
    let log_err = match log.try_clone() {
        Ok(log) => log,
        Err(error) => panic!("sharing {}: {error}", log_path.display()),
    };
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_owned());
    let mut command = tokio::process::Command::new("schemathesis");
    command
        .arg("--config-file")
        .arg(&config_path)
        .arg("--no-color")
        .arg("run")
        .arg(url)
        .args(["--checks", CHECKS])
        .args(["--phases", "coverage,fuzzing"])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--request-timeout", &REQUEST_TIMEOUT.as_secs().to_string()])
        .args(["--seed", &seed])
        // One worker: schemathesis's generation is not safe across threads
        // on every Python (3.11's `ast` trips over itself).
        .args(["--workers", "1"])
        .args(["--suppress-health-check", "all"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => panic!("running schemathesis: {error}"),
    };
    let finished = tokio::time::timeout(RUN_LIMIT, child.wait()).await;
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    match finished {
        Err(_) => {
            let _ = child.kill().await;
            panic!("schemathesis against {url} ran past {RUN_LIMIT:?}; its output:\n{output}")
        }
        Ok(Err(error)) => panic!("waiting for schemathesis: {error}"),
        Ok(Ok(status)) => Outcome::Ran {
            passed: status.success(),
            output,
        },
    }
}
