//! `certs-tool completions SHELL` and `certs-tool man`: read by bash and groff.
#![allow(missing_docs)]

#[test]
fn completions_and_man_pages_are_read_by_bash_and_groff() {
    restpipe_tests::docs::check(
        std::path::Path::new(env!("CARGO_BIN_EXE_certs-tool")),
        &["init-ca", "issue", "revoke", "completions", "man"],
    );
}
