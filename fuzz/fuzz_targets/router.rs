//! The local front's URL router on arbitrary paths: a route or a clear
//! refusal, never a panic; what it accepts round-trips into a handler name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipe_core::HandlerName;
use pipe_core::router::{is_node_name, parse_client_path, parse_server_path};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(Ok(piped)) = parse_server_path(path) {
        let name = HandlerName::new("get", piped.noun.clone());
        assert_eq!(name.noun(), piped.noun);
        for segment in piped.noun.split('/') {
            assert!(!matches!(segment, "" | "." | ".."), "{path:?}");
        }
    }
    if let Some(Ok((client, piped))) = parse_client_path(path) {
        assert!(is_node_name(&client), "{path:?} routed to {client:?}");
        let _ = HandlerName::new("post", piped.noun);
    }
});
