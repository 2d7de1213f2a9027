//! Reading a node's name and role from arbitrary certificate bytes (what
//! every connecting peer presents): an error or a valid name, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipe_core::{Role, has_extended_key_usage, is_valid_node_name, node_name};

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = node_name(data) {
        assert!(is_valid_node_name(&name), "{name:?}");
    }
    let _ = has_extended_key_usage(data, Role::Client);
    let _ = has_extended_key_usage(data, Role::Server);
});
