//! Operating a node: configuration (flags, environment, file, profiles),
//! launching the pieces of a node, logging, identity files and their checks,
//! and the small CA kit behind `certs-tool`. Sits on top of every other layer.

pub mod config;
pub mod docs_cli;
pub mod identity;
pub mod jobs_cli;
pub mod launch;
pub mod logging;
pub mod pki;
pub mod tokens_cli;
