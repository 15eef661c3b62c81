//! Encode stage: Arrow `RecordBatch` → PostgreSQL binary COPY bytes (orders mapping), per core.

// Bench setup may unwrap; `criterion_group!` makes `pub` functions.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ddb2pg::schema::ColumnType;

mod common;

fn encode(c: &mut Criterion) {
    let (data, plan) = common::orders(20_000);
    let batches: Vec<_> = common::pages(&data, 2 << 20)
        .into_iter()
        .map(|p| {
            ddb2pg::decode::decode_lines(&plan, p, 1)
                .expect("decode")
                .batch
        })
        .collect();
    let types: Vec<ColumnType> = plan.types().collect();
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let mut probe = Vec::new();
    for b in &batches {
        ddb2pg::encode::encode_batch(b, &types, &mut probe).expect("encode");
    }
    let copy_bytes = probe.len() as u64;
    let mut g = c.benchmark_group("encode");
    g.sample_size(30);
    for (name, tp) in [
        ("orders_rows", Throughput::Elements(rows)),
        ("orders_copy_bytes", Throughput::Bytes(copy_bytes)),
    ] {
        g.throughput(tp);
        g.bench_function(name, |b| {
            b.iter_batched(
                || Vec::with_capacity(copy_bytes as usize / batches.len().max(1) + 1024),
                |mut out| {
                    for batch in &batches {
                        out.clear();
                        ddb2pg::encode::encode_batch(batch, &types, &mut out).expect("encode");
                        black_box(&out);
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
