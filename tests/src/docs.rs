//! A binary's shell completions and man pages, checked by the real tools
//! that read them: bash parses the completion script (`bash -n`) and groff
//! renders every page with all warnings on.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `program args` with `input` on its standard input: its status,
/// standard output and standard error.
fn run(program: &str, args: &[&str], input: &[u8]) -> (bool, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{program}: {error}"));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input)
        .expect("writing to the child");
    let output = child.wait_with_output().expect("waiting for the child");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Checks `binary`'s `completions` and `man` against bash and groff: every
/// one of `subcommands` is completed and has a page that renders cleanly.
pub fn check(binary: &Path, subcommands: &[&str]) {
    let bin = binary.to_str().expect("a UTF-8 path");
    let name = binary
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a binary's UTF-8 file name");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (ok, script, errors) = run(bin, &["completions", shell], b"");
        assert!(ok && script.contains(name), "{shell}: {errors}");
    }
    let (_, script, _) = run(bin, &["completions", "bash"], b"");
    let (parsed, _, errors) = run("bash", &["-n"], script.as_bytes());
    assert!(parsed, "bash -n refuses the completion script: {errors}");
    for sub in subcommands {
        assert!(script.contains(sub), "{sub} is not completed");
    }

    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().to_str().expect("a UTF-8 path");
    let (ok, _, errors) = run(bin, &["man", "--out", out], b"");
    assert!(ok, "{errors}");
    let groff = Path::new("/usr/bin/groff").exists();
    if !groff {
        assert!(
            std::env::var_os("CI").is_none(),
            "groff is missing (Debian: groff-base)"
        );
        eprintln!("groff is missing: the man pages are written but not rendered");
    }
    let pages =
        std::iter::once(name.to_owned()).chain(subcommands.iter().map(|s| format!("{name}-{s}")));
    for page in pages {
        let path = dir.path().join(format!("{page}.1"));
        let roff = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if groff {
            let (ok, _, warnings) = run("groff", &["-man", "-Tutf8", "-ww", "-z"], &roff);
            assert!(ok && warnings.is_empty(), "{page}.1: {warnings}");
            let (_, text, _) = run("groff", &["-man", "-Tutf8"], &roff);
            let text = plain(&text);
            assert!(
                text.contains("NAME") && text.contains(&page),
                "{page}.1:\n{text}"
            );
        }
    }
    let (ok, stdout_page, _) = run(bin, &["man"], b"");
    assert!(ok && stdout_page.contains(".TH"), "man to standard output");
}

/// `text` without a terminal's overstrikes (`N\x08N` for a bold N).
fn plain(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next();
            continue;
        }
        plain.push(c);
    }
    plain
}
