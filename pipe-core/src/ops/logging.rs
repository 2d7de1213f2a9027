//! Logging through tracing, to stderr (stdout is for what a command prints;
//! journald captures both). `RUST_LOG`, when set, overrides the level.

use super::config::{LogFormat, Logging};

/// Installs the global subscriber for `logging`.
pub fn init(logging: Logging) {
    use tracing_subscriber::EnvFilter;
    let default = if logging.debug {
        "debug,hyper=info,rustls=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match logging.format {
        LogFormat::Json => builder.json().with_ansi(false).init(),
        // Colour only on a terminal: piped or redirected logs stay plain.
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
