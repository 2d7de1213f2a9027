//! The access policy decides on exactly the (verb, noun) that the handler
//! sources then resolve. For an arbitrary verb, noun and policy, against a
//! model of the documented rules:
//!
//! - a verb other than get, post, put, patch, delete has no handler, and no
//!   source is even asked (a verb such as `get_files_x` would otherwise let
//!   noun `admin/secret` pass a `get_files_*` rule as `get_files_x_admin_secret`
//!   and reach the `admin/` forward);
//! - a name the policy does not allow (shell wildcards on
//!   `verb_noun-with-/-as-_`) is denied, and no source is asked;
//! - an allowed name reaches the handler the model expects, in precedence
//!   order: the Rust handler of that very name, else the forward whose
//!   prefix covers the noun by whole segments (the longest), else the
//!   executable of that very name, else nothing (a last catch-all source
//!   here), so what runs is what the policy allowed.
//!
//! Input: `[len][verb][len][noun]` then `[len][handler pattern]...` (no
//! pattern: no policy).
#![no_main]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pipe_core::{
    ExecDirectory, Forwards, Handler, HandlerFuture, HandlerName, HandlerSource, Handlers, Policy,
    Registry, Reply, Request, Resolution,
};

const VERBS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
const PEER: &str = "branch-1";
/// Rust handlers, by name.
const REGISTERED: &[&str] = &["get_time", "get_files_x", "post_files_upload", "get_a_b"];
/// Forwards, by prefix.
const FORWARDED: &[&str] = &["files", "files/private", "admin", "a_b", "a"];
/// Executables in the handler directory.
const EXECUTABLES: &[&str] = &["get_tool", "get_files_exec", "delete_a_b_c", "get_admin"];

/// A Rust handler that says which name it was registered under.
struct Named(&'static str);

impl Handler for Named {
    fn call(&self, _request: Request) -> HandlerFuture {
        Box::pin(async { Ok(Reply::bytes("text/plain", "")) })
    }

    fn metric_name(&self, _name: &str) -> String {
        format!("registry:{}", self.0)
    }
}

/// The last source: answers everything, counting the times it is asked.
struct CatchAll(Arc<AtomicUsize>);

impl HandlerSource for CatchAll {
    fn lookup(&self, _name: &HandlerName) -> Option<Arc<dyn Handler>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Some(Arc::new(Named("catch-all")))
    }

    fn names(&self) -> Vec<String> {
        vec!["*".to_owned()]
    }
}

/// The handler directory, made once, with its executables.
fn exec_directory() -> ExecDirectory {
    static DIRECTORY: OnceLock<ExecDirectory> = OnceLock::new();
    DIRECTORY
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt as _;
            // One fixed place: made again identically by every run.
            let dir = std::env::temp_dir().join("restpipe-fuzz-policy-handlers");
            std::fs::create_dir_all(&dir).expect("a handler directory");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .expect("the directory's mode");
            for name in EXECUTABLES {
                let path: PathBuf = dir.join(name);
                std::fs::write(&path, "#!/bin/sh\n").expect("an executable");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .expect("an executable's mode");
            }
            ExecDirectory::new(dir, 1024).expect("the handler directory")
        })
        .clone()
}

fn handlers(policy: Option<Policy>, asked: Arc<AtomicUsize>) -> Handlers {
    let mut registry = Registry::new();
    for name in REGISTERED {
        registry.register(*name, Named(name));
    }
    let specs: Vec<(String, String)> = FORWARDED
        .iter()
        .enumerate()
        .map(|(i, prefix)| {
            (
                prefix.to_string(),
                format!("http://127.0.0.1:{}/", 9000 + i),
            )
        })
        .collect();
    let forwards = Forwards::new(&specs).expect("the forwards are valid");
    let handlers = Handlers::new(registry)
        .with_source(forwards)
        .with_source(exec_directory())
        .with_source(CatchAll(asked));
    match policy {
        Some(policy) => handlers.with_policy(policy),
        None => handlers,
    }
}

/// Shell-style wildcards, `*` any run and `?` any one character, written
/// afresh as the model: which pattern prefixes match which text prefixes.
fn matches(pattern: &[char], text: &[char]) -> bool {
    // row[j]: the pattern so far matches text[..j].
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        for j in 0..=text.len() {
            next[j] = match p {
                '*' => row[j] || (j > 0 && next[j - 1]),
                p => j > 0 && row[j - 1] && (p == '?' || p == text[j - 1]),
            };
        }
        row = next;
    }
    row[text.len()]
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the model expects to answer an allowed event to (verb, noun).
fn expected(name: &str, noun: &str) -> String {
    if REGISTERED.contains(&name) {
        return format!("registry:{name}");
    }
    let segments_ok = noun.split('/').all(|s| {
        !matches!(s, "" | "." | "..")
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.~".contains(&b))
    });
    let forward = FORWARDED
        .iter()
        .filter(|p| noun == **p || noun.strip_prefix(**p).is_some_and(|r| r.starts_with('/')))
        .max_by_key(|p| p.len());
    if let (true, Some(prefix)) = (segments_ok, forward) {
        return format!("forward_{prefix}");
    }
    if EXECUTABLES.contains(&name) {
        return name.to_owned();
    }
    "registry:catch-all".to_owned()
}

/// Splits `[len][bytes]` records off the input.
fn records(mut data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len).min(rest.len());
        out.push(String::from_utf8_lossy(&rest[..len]).into_owned());
        data = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut fields = records(data).into_iter();
    let (Some(verb), Some(noun)) = (fields.next(), fields.next()) else {
        return;
    };
    let patterns: Vec<String> = fields.collect();
    let policy = (!patterns.is_empty()).then(|| {
        let list: Vec<String> = patterns.iter().map(|p| toml_string(p)).collect();
        let text = format!(
            "[[allow]]\npeers = [\"*\"]\nhandlers = [{}]\n",
            list.join(", ")
        );
        Policy::parse(&text, "fuzz").expect("the policy parses")
    });
    let name = HandlerName::new(verb.clone(), noun.clone());
    let flat = format!("{verb}_{}", noun.replace('/', "_"));
    assert_eq!(name.as_str(), flat);
    let allowed = patterns.is_empty() || {
        let text: Vec<char> = flat.chars().collect();
        patterns
            .iter()
            .any(|p| matches(&p.chars().collect::<Vec<_>>(), &text))
    };
    let asked = Arc::new(AtomicUsize::new(0));
    let handlers = handlers(policy, asked.clone());
    let resolution = handlers.resolve(PEER, &name);
    let asked = asked.load(Ordering::Relaxed);
    if !VERBS.contains(&verb.as_str()) {
        assert!(
            matches!(resolution, Resolution::Missing),
            "verb {verb:?} got a handler"
        );
        assert_eq!(asked, 0, "verb {verb:?}: a source was asked");
        return;
    }
    if !allowed {
        assert!(
            matches!(resolution, Resolution::Denied(_)),
            "{flat:?} was not denied"
        );
        assert_eq!(
            asked, 0,
            "{flat:?}: a source was asked before the policy refused"
        );
        return;
    }
    let Resolution::Found(handler) = resolution else {
        panic!("{flat:?} (noun {noun:?}) was allowed but reached no handler");
    };
    assert_eq!(
        handler.metric_name(&flat),
        expected(&flat, &noun),
        "{verb:?} {noun:?}"
    );
});
