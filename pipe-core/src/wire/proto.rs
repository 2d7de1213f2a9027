//! The wire messages, generated from `proto/pipe.proto` at build time.
#![allow(missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/restpipe.v1.rs"));
