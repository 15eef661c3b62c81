//! Decode stage: DynamoDB JSON lines → Arrow `RecordBatch` (orders mapping), per core.

// Bench setup may unwrap; `criterion_group!` makes `pub` functions.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

mod common;

fn decode(c: &mut Criterion) {
    let (data, plan) = common::orders(20_000);
    let pages = common::pages(&data, 2 << 20);
    let rows = data.iter().filter(|&&b| b == b'\n').count() as u64;
    let mut g = c.benchmark_group("decode");
    g.sample_size(20);
    g.throughput(Throughput::Elements(rows));
    g.bench_function("orders_rows", |b| {
        b.iter(|| {
            for p in &pages {
                black_box(ddb2pg::decode::decode_lines(&plan, p, 1).expect("decode"));
            }
        })
    });
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("orders_json_bytes", |b| {
        b.iter(|| {
            for p in &pages {
                black_box(ddb2pg::decode::decode_lines(&plan, p, 1).expect("decode"));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
