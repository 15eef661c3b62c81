//! Shared setup for the stage benches: the CloudShelf orders generated from a seed (never
//! downloaded), gunzipped into memory once, and the orders mapping of `pipeline.toml`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;

use ddb2pg::config::Config;
use ddb2pg::decode::TablePlan;

/// Uncompressed DynamoDB JSON lines of `scale` generated orders, and the orders plan.
pub fn orders(scale: u64) -> (Vec<u8>, TablePlan) {
    let dir = std::env::temp_dir().join(format!("ddb2pg-bench-fixtures-{scale}"));
    if !dir.join("orders/manifest-summary.json").exists() {
        ddb2pg::fixtures::generate(&dir, scale, 42).expect("generate fixtures");
    }
    let export = ddb2pg::source::export::open(&dir.join("orders")).expect("export");
    let mut data = Vec::new();
    for f in &export.files {
        let mut bytes = Vec::new();
        export
            .open_data(f)
            .expect("open")
            .read_to_end(&mut bytes)
            .expect("read");
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut data)
            .expect("gunzip");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("pipeline.toml")).expect("pipeline.toml");
    let config = Config::parse(&text, &root.join("pipeline.toml"), root, None).expect("config");
    let spec = config
        .tables
        .iter()
        .find(|t| t.name == "orders")
        .expect("orders table");
    (data, TablePlan::new(spec))
}

/// Cuts `data` into pages of whole lines of about `page` bytes.
pub fn pages(data: &[u8], page: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let mut end = (start + page).min(data.len());
        while end < data.len() && data[end - 1] != b'\n' {
            end += 1;
        }
        out.push(&data[start..end]);
        start = end;
    }
    out
}
