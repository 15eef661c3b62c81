//! Decode stage: DynamoDB JSON lines → Arrow `RecordBatch` (orders mapping), per core; and
//! the same orders as Amazon Ion lines (an Ion export's), rewritten and decoded.

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
    // The same items as an Ion export holds them: rows/s compare directly; MB/s are of
    // each format's own bytes.
    let mut ion = Vec::new();
    ddb2pg::ddbjson::ion::page_from_ddb_json(&data, &mut ion).expect("ion");
    let ion_pages = common::pages(&ion, 2 << 20);
    let ion_decode = |b: &mut criterion::Bencher<'_>| {
        b.iter(|| {
            for p in &ion_pages {
                let json = ddb2pg::ddbjson::ion::page_to_ddb_json(p);
                black_box(ddb2pg::decode::decode_lines(&plan, &json, 1).expect("decode"));
            }
        })
    };
    g.throughput(Throughput::Elements(rows));
    g.bench_function("orders_ion_rows", ion_decode);
    g.throughput(Throughput::Bytes(ion.len() as u64));
    g.bench_function("orders_ion_bytes", ion_decode);
    g.throughput(Throughput::Bytes(ion.len() as u64));
    g.bench_function("orders_ion_rewrite_only_bytes", |b| {
        b.iter(|| {
            for p in &ion_pages {
                black_box(ddb2pg::ddbjson::ion::page_to_ddb_json(p));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
