//! Micro-benchmarks of routing: turning a local request path into the
//! handler it reaches, which every piped request does once on its way in.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pipe_core::handler_name;
use pipe_core::router::{parse_client_path, parse_server_path};

fn router(c: &mut Criterion) {
    let mut group = c.benchmark_group("router");
    for path in ["/server/time", "/server/cat//hello%20/world"] {
        group.bench_function(format!("parse_server_path {path}"), |b| {
            b.iter(|| black_box(parse_server_path(black_box(path))))
        });
    }
    for path in ["/client/node-1/time/utc", "/client/node-1/cat//a%2Fb/c?x=1"] {
        group.bench_function(format!("parse_client_path {path}"), |b| {
            b.iter(|| black_box(parse_client_path(black_box(path))))
        });
    }
    group.bench_function("handler_name get time/utc", |b| {
        b.iter(|| black_box(handler_name(black_box("get"), black_box("time/utc"))))
    });
    group.finish();
}

criterion_group!(benches, router);
criterion_main!(benches);
