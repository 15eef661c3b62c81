//! `ddb2pg fixtures generate`: the CloudShelf data set (books, users, orders, carts) as
//! four DynamoDB full exports in AWS's exact layout.
//!
//! Input: an output folder, a scale (number of orders) and a seed. Output:
//! `DIR/<table>/{manifest-summary.json,.md5, manifest-files.json,.md5, _started, data/*.json.gz}`
//! with checksums computed from the bytes written, several data files (one always
//! empty), attributes in shuffled order, every DynamoDB type where the shop would use it,
//! and the awkward values real data has. Deterministic for a seed: every file is generated
//! from its own seeded stream, in parallel.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use md5::{Digest, Md5};
use rayon::prelude::*;

use crate::ddbjson::write_json_string;
use crate::error::{Error, Result};

/// The tables of the data set, in load order.
pub const TABLES: [&str; 4] = ["books", "users", "orders", "carts"];

/// Item counts per table for a scale.
#[must_use]
pub fn counts(scale: u64) -> [(&'static str, u64); 4] {
    let s = scale.max(1);
    [
        ("books", (s / 8).max(20)),
        ("users", (s / 4).max(20)),
        ("orders", s),
        ("carts", (s / 8).max(20)),
    ]
}

/// What was written for one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeneratedTable {
    pub table: String,
    pub dir: PathBuf,
    pub items: u64,
    pub files: usize,
    pub bytes: u64,
}

/// SplitMix64: small, fast, and stable across versions (a seed means the same data forever).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

fn mix(seed: u64, table: &str, i: u64) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for b in table.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let mut r = Rng::new(h ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.next_u64()
}

/// The ten digits after `978-` of book `i`'s ISBN: a bijection of `i` modulo 10^10
/// (multiplier coprime to 10), so they look random and never repeat — `isbn` is a unique
/// column, and random digits collide from about 100k books on.
fn isbn_digits(seed: u64, i: u64) -> u64 {
    const SPACE: u64 = 10_000_000_000;
    let mut a = (mix(seed, "isbn-a", 0) % SPACE) | 1;
    if a.is_multiple_of(5) {
        a += 2;
    }
    let b = mix(seed, "isbn-b", 0) % SPACE;
    let d = (u128::from(a) * u128::from(i % SPACE) + u128::from(b)) % u128::from(SPACE);
    u64::try_from(d).unwrap_or(0)
}

/// The UUID of item `i` of `table` (orders refer to users and books by these).
#[must_use]
pub fn uuid_of(seed: u64, table: &str, i: u64) -> String {
    let a = mix(seed, table, i);
    let b = mix(seed ^ 0x5555, table, i);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    crate::convert::format_uuid(&bytes)
}

const FIRST: [&str; 16] = [
    "Ada", "José", "Zoë", "Łukasz", "Mei", "Олег", "Aarav", "Fatima", "Søren", "Amara", "Hiroshi",
    "Chloé", "Kwame", "Ingrid", "محمد", "Noa",
];
const LAST: [&str; 12] = [
    "Lovelace",
    "García",
    "Müller",
    "O'Brien",
    "Nguyễn",
    "Kowalski",
    "Okafor",
    "Tanaka",
    "Smith",
    "Dubois",
    "Rossi",
    "Østergaard",
];
const WORDS: [&str; 24] = [
    "shadow",
    "garden",
    "river",
    "midnight",
    "library",
    "empire",
    "quantum",
    "whisper",
    "dragon",
    "ocean",
    "silent",
    "winter",
    "café",
    "naïve",
    "crème",
    "über",
    "思考",
    "物語",
    "🚀",
    "📚",
    "«quoted»",
    "tab\there",
    "line\nbreak",
    "back\\slash",
];
const CATEGORIES: [&str; 8] = [
    "Fiction",
    "Science",
    "History",
    "Children",
    "Fantasy",
    "Biography",
    "Technology",
    "Poetry",
];
const STATUSES: [&str; 5] = ["PENDING", "PAID", "SHIPPED", "DELIVERED", "CANCELLED"];
const TAGS: [&str; 8] = [
    "vip",
    "newsletter",
    "early-adopter",
    "student",
    "b2b",
    "gift-buyer",
    "reviewer",
    "🌟",
];
const CITIES: [&str; 6] = [
    "Lisboa",
    "Kraków",
    "São Paulo",
    "Zürich",
    "東京",
    "Reykjavík",
];

/// One item under construction: attributes as (name, DynamoDB JSON of the value).
struct ItemBuf {
    attrs: Vec<(&'static str, String)>,
}

impl ItemBuf {
    fn new() -> ItemBuf {
        ItemBuf {
            attrs: Vec::with_capacity(16),
        }
    }
    fn s(&mut self, k: &'static str, v: &str) {
        let mut o = String::with_capacity(v.len() + 8);
        o.push_str("{\"S\":");
        write_json_string(&mut o, v);
        o.push('}');
        self.attrs.push((k, o));
    }
    fn n(&mut self, k: &'static str, v: &str) {
        self.attrs.push((k, format!("{{\"N\":\"{v}\"}}")));
    }
    fn raw(&mut self, k: &'static str, json: String) {
        self.attrs.push((k, json));
    }
    /// Writes `{"Item":{...}}\n` with the attributes in shuffled order.
    fn write(mut self, rng: &mut Rng, out: &mut Vec<u8>) {
        let n = self.attrs.len();
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            self.attrs.swap(i, j);
        }
        out.extend_from_slice(b"{\"Item\":{");
        for (i, (k, v)) in self.attrs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(b"}}\n");
    }
}

fn ss(items: &[&str]) -> String {
    let mut o = String::from("{\"SS\":[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        write_json_string(&mut o, s);
    }
    o.push_str("]}");
    o
}

/// Between `min` and `min + spread - 1` words.
fn words(rng: &mut Rng, min: usize, spread: u64) -> String {
    let n = min + rng.below(spread.max(1)) as usize;
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(&WORDS));
    }
    s
}

/// An ISO 8601 UTC timestamp in 2019..2026 with milliseconds.
fn iso_time(rng: &mut Rng) -> String {
    let secs = 1_546_300_800 + rng.below(220_000_000) as i64;
    let ms = rng.below(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian.
#[must_use]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn cents(c: u64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// A DynamoDB-normalised price: trailing fractional zeros dropped, as DynamoDB stores it.
fn price_text(c: u64) -> String {
    let s = cents(c);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

fn book(seed: u64, i: u64, rng: &mut Rng, out: &mut Vec<u8>) {
    let mut it = ItemBuf::new();
    it.s("bookId", &uuid_of(seed, "books", i));
    let title = match i % 50 {
        7 => format!("📚 {} — the sequel", words(rng, 3, 1)),
        13 => String::new(),
        _ => words(rng, 1, 5),
    };
    it.s("title", &title);
    it.s(
        "author",
        &format!("{} {}", rng.pick(&FIRST), rng.pick(&LAST)),
    );
    it.s("isbn", &format!("978-{:010}", isbn_digits(seed, i)));
    it.n("price", &price_text(99 + rng.below(15_000)));
    if !rng.chance(15) {
        it.s("category", rng.pick(&CATEGORIES));
    }
    if !rng.chance(20) {
        it.n("stockQuantity", &rng.below(500).to_string());
    }
    let desc = match rng.below(100) {
        0 => words(rng, 3000, 4000),
        1..=5 => String::new(),
        _ => words(rng, 10, 40),
    };
    it.s("description", &desc);
    if rng.chance(70) {
        let k = 1 + rng.below(3) as usize;
        let mut tags: Vec<&str> = Vec::new();
        while tags.len() < k {
            let t = rng.pick(&CATEGORIES);
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        it.raw("genres", ss(&tags));
    }
    if rng.chance(60) {
        it.n("rating", &format!("{}.{}", 1 + rng.below(4), rng.below(10)));
    }
    it.s("createdAt", &iso_time(rng));
    it.s("updatedAt", &iso_time(rng));
    it.raw("isActive", format!("{{\"BOOL\":{}}}", rng.chance(90)));
    if rng.chance(30) {
        let mut b = vec![0u8; 8 + rng.below(40) as usize];
        for x in &mut b {
            *x = rng.next_u64() as u8;
        }
        it.raw(
            "coverThumb",
            format!(
                "{{\"B\":\"{}\"}}",
                base64::engine::general_purpose::STANDARD.encode(&b)
            ),
        );
    }
    if rng.chance(10) {
        it.raw("discontinuedAt", "{\"NULL\":true}".into());
    }
    if i % 97 == 3 {
        // 38 significant digits, and DynamoDB's extremes in plain form.
        it.n("catalogRef", "12345678901234567890123456789012345678");
        it.n(
            "hugeValue",
            &format!("{}{}", "9".repeat(38), "0".repeat(88)),
        );
        it.n("tinyValue", &format!("0.{}1", "0".repeat(129)));
    }
    it.write(rng, out);
}

fn user(seed: u64, i: u64, rng: &mut Rng, out: &mut Vec<u8>) {
    let mut it = ItemBuf::new();
    it.s("userId", &uuid_of(seed, "users", i));
    it.s("email", &format!("user{i}@example.com"));
    it.s("name", &format!("{} {}", rng.pick(&FIRST), rng.pick(&LAST)));
    it.s("createdAt", &iso_time(rng));
    if rng.chance(80) {
        it.n(
            "lastLoginEpoch",
            &(1_600_000_000 + rng.below(150_000_000)).to_string(),
        );
    }
    if rng.chance(50) {
        let k = 1 + rng.below(3) as usize;
        let mut tags: Vec<&str> = Vec::new();
        while tags.len() < k {
            let t = rng.pick(&TAGS);
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        it.raw("tags", ss(&tags));
    }
    let mut prefs = String::from("{\"M\":{");
    let _ = write!(
        prefs,
        "\"newsletter\":{{\"BOOL\":{}}},\"currency\":{{\"S\":\"{}\"}},\"pageSize\":{{\"N\":\"{}\"}}",
        rng.chance(40),
        rng.pick(&["EUR", "USD", "BRL", "JPY"]),
        10 + rng.below(5) * 10
    );
    prefs.push_str("}}");
    it.raw("preferences", prefs);
    if rng.chance(70) {
        let mut a = String::from("{\"M\":{\"city\":");
        let mut city = String::from("{\"S\":");
        write_json_string(&mut city, rng.pick(&CITIES));
        city.push('}');
        a.push_str(&city);
        let _ = write!(a, ",\"zip\":{{\"S\":\"{:05}\"}}", rng.below(100_000));
        a.push_str("}}");
        it.raw("address", a);
    }
    if rng.chance(5) {
        it.s("bio", "");
    } else if rng.chance(2) {
        // Text PostgreSQL cannot hold as is: the mapping strips U+0000.
        it.s(
            "bio",
            &format!("pasted from a C string\0{}", words(rng, 2, 3)),
        );
    } else if rng.chance(30) {
        it.s("bio", &words(rng, 5, 20));
    }
    it.n("loyaltyPoints", &rng.below(100_000).to_string());
    it.write(rng, out);
}

fn order(seed: u64, i: u64, scale: u64, rng: &mut Rng, out: &mut Vec<u8>) {
    let [(_, books), (_, users), _, _] = counts(scale);
    let mut it = ItemBuf::new();
    it.s("orderId", &uuid_of(seed, "orders", i));
    it.s("userId", &uuid_of(seed, "users", rng.below(users)));
    it.s("createdAt", &iso_time(rng));
    it.s("status", rng.pick(&STATUSES));
    let lines = 1 + rng.below(4);
    let mut items = String::from("{\"L\":[");
    let mut total: u64 = 0;
    for k in 0..lines {
        if k > 0 {
            items.push(',');
        }
        let qty = 1 + rng.below(3);
        let unit = 199 + rng.below(5000);
        total += qty * unit;
        let _ = write!(
            items,
            "{{\"M\":{{\"bookId\":{{\"S\":\"{}\"}},\"quantity\":{{\"N\":\"{qty}\"}},\"unitPrice\":{{\"N\":\"{}\"}}}}}}",
            uuid_of(seed, "books", rng.below(books)),
            price_text(unit)
        );
    }
    items.push_str("]}");
    it.raw("items", items);
    it.n("total", &price_text(total));
    if rng.chance(60) {
        let mut a = String::from("{\"M\":{\"city\":");
        let mut city = String::from("{\"S\":");
        write_json_string(&mut city, rng.pick(&CITIES));
        city.push('}');
        a.push_str(&city);
        let _ = write!(
            a,
            ",\"line1\":{{\"S\":\"{} Main St\"}}}}}}",
            1 + rng.below(999)
        );
        it.raw("shippingAddress", a);
    }
    match rng.below(10) {
        0 => it.s("notes", ""),
        1 => it.s("notes", &words(rng, 8, 1)),
        _ => {}
    }
    it.raw("giftWrap", format!("{{\"BOOL\":{}}}", rng.chance(10)));
    if rng.chance(15) {
        it.raw(
            "couponCodes",
            ss(&["WELCOME10", "SPRING"][..1 + rng.below(2) as usize]),
        );
    }
    if i % 101 == 5 {
        it.n("fxRate", "1.0843000000000000000000000000000000001");
        it.n(
            "ledgerRef",
            &format!("{}{}", "1".repeat(38), "0".repeat(60)),
        );
    }
    it.write(rng, out);
}

fn cart(seed: u64, i: u64, scale: u64, rng: &mut Rng, out: &mut Vec<u8>) {
    let [(_, books), (_, users), _, _] = counts(scale);
    let mut it = ItemBuf::new();
    it.s("userId", &uuid_of(seed, "users", i % users));
    let n = rng.below(4);
    let mut items = String::from("{\"L\":[");
    for k in 0..n {
        if k > 0 {
            items.push(',');
        }
        let _ = write!(
            items,
            "{{\"M\":{{\"bookId\":{{\"S\":\"{}\"}},\"quantity\":{{\"N\":\"{}\"}}}}}}",
            uuid_of(seed, "books", rng.below(books)),
            1 + rng.below(3)
        );
    }
    items.push_str("]}");
    it.raw("items", items);
    let updated = 1_700_000_000 + rng.below(40_000_000);
    it.n("updatedAt", &updated.to_string());
    it.n("expiresAt", &(updated + 30 * 86_400).to_string());
    it.write(rng, out);
}

/// Writes the data set.
///
/// # Errors
/// The folder cannot be written.
pub fn generate(out: &Path, scale: u64, seed: u64) -> Result<Vec<GeneratedTable>> {
    let io = |what: String| move |e: std::io::Error| Error::Io { what, source: e };
    let mut result = Vec::new();
    for (table, items) in counts(scale) {
        let dir = out.join(table);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(format!("remove {}", dir.display())))?;
        }
        let export_id = format!(
            "0{:013}-{:08x}",
            1_700_000_000_000 + mix(seed, table, 0) % 10_000_000_000,
            mix(seed, table, 1) as u32
        );
        let prefix = format!("AWSDynamoDB/{export_id}");
        std::fs::create_dir_all(dir.join("data"))
            .map_err(io(format!("create {}", dir.display())))?;
        // Several files; the second is always empty, as real exports have.
        let per_file: u64 = 50_000;
        let nfiles = (items.div_ceil(per_file) + 1).max(3) as usize;
        let data_files = nfiles - 1;
        let ranges: Vec<(usize, u64, u64)> = (0..nfiles)
            .map(|f| {
                if f == 1 {
                    return (f, 0, 0);
                }
                let k = if f == 0 { 0 } else { f - 1 } as u64;
                let lo = items * k / data_files as u64;
                let hi = items * (k + 1) / data_files as u64;
                (f, lo, hi)
            })
            .collect();
        let files: Vec<Result<(String, u64, String, u64)>> = ranges
            .par_iter()
            .map(|&(f, lo, hi)| {
                let name = file_name(seed, table, f as u64);
                let key = format!("{prefix}/data/{name}.json.gz");
                let path = dir.join("data").join(format!("{name}.json.gz"));
                let mut rng = Rng::new(mix(seed, table, 1_000_000_007 + f as u64));
                let file = std::fs::File::create(&path)
                    .map_err(io(format!("create {}", path.display())))?;
                let mut gz = flate2::write::GzEncoder::new(
                    HashingWriter {
                        inner: std::io::BufWriter::with_capacity(1 << 20, file),
                        md5: Md5::new(),
                        bytes: 0,
                    },
                    flate2::Compression::new(1),
                );
                let mut buf = Vec::with_capacity(1 << 20);
                for i in lo..hi {
                    match table {
                        "books" => book(seed, i, &mut rng, &mut buf),
                        "users" => user(seed, i, &mut rng, &mut buf),
                        "orders" => order(seed, i, scale, &mut rng, &mut buf),
                        _ => cart(seed, i, scale, &mut rng, &mut buf),
                    }
                    if buf.len() >= 1 << 20 {
                        gz.write_all(&buf)
                            .map_err(io(format!("write {}", path.display())))?;
                        buf.clear();
                    }
                }
                gz.write_all(&buf)
                    .map_err(io(format!("write {}", path.display())))?;
                let mut hw = gz
                    .finish()
                    .map_err(io(format!("write {}", path.display())))?;
                hw.inner
                    .flush()
                    .map_err(io(format!("write {}", path.display())))?;
                let md5 = base64::engine::general_purpose::STANDARD.encode(hw.md5.finalize());
                Ok((key, hi - lo, md5, hw.bytes))
            })
            .collect();
        let mut manifest = String::new();
        let mut bytes = 0;
        for f in files {
            let (key, count, md5, size) = f?;
            bytes += size;
            let etag = format!(
                "{:032x}-1",
                u128::from(mix(seed, &key, 7)) << 64 | u128::from(mix(seed, &key, 8))
            );
            let _ = writeln!(
                manifest,
                "{{\"itemCount\":{count},\"md5Checksum\":\"{md5}\",\"etag\":\"{etag}\",\"dataFileS3Key\":\"{key}\"}}"
            );
        }
        let write = |name: &str, content: &[u8]| -> Result<()> {
            let p = dir.join(name);
            std::fs::write(&p, content).map_err(io(format!("write {}", p.display())))
        };
        write("manifest-files.json", manifest.as_bytes())?;
        write(
            "manifest-files.md5",
            b64_md5(manifest.as_bytes()).as_bytes(),
        )?;
        let summary = format!(
            "{{\"version\":\"2020-06-30\",\"exportArn\":\"arn:aws:dynamodb:us-east-1:000000000000:table/{table}/export/{export_id}\",\"startTime\":\"2026-01-01T00:00:00.000Z\",\"endTime\":\"2026-01-01T00:05:00.000Z\",\"tableArn\":\"arn:aws:dynamodb:us-east-1:000000000000:table/{table}\",\"tableId\":\"{}\",\"exportTime\":\"2026-01-01T00:00:00.000Z\",\"s3Bucket\":\"cloudshelf-exports\",\"s3Prefix\":null,\"s3SseAlgorithm\":\"AES256\",\"s3SseKmsKeyId\":null,\"manifestFilesS3Key\":\"{prefix}/manifest-files.json\",\"billedSizeBytes\":{bytes},\"itemCount\":{items},\"outputFormat\":\"DYNAMODB_JSON\",\"exportType\":\"FULL_EXPORT\"}}",
            uuid_of(seed, "tableId", TABLES.iter().position(|t| *t == table).unwrap_or(0) as u64)
        );
        write("manifest-summary.json", summary.as_bytes())?;
        write(
            "manifest-summary.md5",
            b64_md5(summary.as_bytes()).as_bytes(),
        )?;
        write("_started", b"")?;
        result.push(GeneratedTable {
            table: table.to_string(),
            dir,
            items,
            files: nfiles,
            bytes,
        });
    }
    Ok(result)
}

fn b64_md5(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(b))
}

/// A 26-character lowercase base32 name, like AWS's data file names.
fn file_name(seed: u64, table: &str, f: u64) -> String {
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut r = Rng::new(mix(seed, table, 0xF11E + f));
    (0..26)
        .map(|_| ALPHA[r.below(32) as usize] as char)
        .collect()
}

struct HashingWriter<W> {
    inner: W,
    md5: Md5,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.md5.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `isbn` is a unique column: 2M books (a 16M-order scale) never repeat one, for two
    /// seeds, and each is ten digits.
    #[test]
    fn isbns_never_repeat() {
        for seed in [1, 7] {
            let mut seen = std::collections::HashSet::new();
            for i in 0..2_000_000 {
                let d = isbn_digits(seed, i);
                assert!(d < 10_000_000_000);
                assert!(seen.insert(d), "seed {seed}: book {i} repeats an ISBN");
            }
        }
    }

    #[test]
    fn deterministic_and_loadable_layout() {
        let base =
            std::env::temp_dir().join(format!("ddb2pg-fixtures-test-{}", std::process::id()));
        let a = base.join("a");
        let b = base.join("b");
        generate(&a, 300, 42).expect("gen a");
        generate(&b, 300, 42).expect("gen b");
        for t in TABLES {
            let ma = std::fs::read(a.join(t).join("manifest-files.json")).expect("manifest");
            let mb = std::fs::read(b.join(t).join("manifest-files.json")).expect("manifest");
            assert_eq!(ma, mb, "{t} differs between two runs with one seed");
            let plan = crate::source::export::open(&a.join(t)).expect("opens");
            assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
            assert!(
                plan.files.iter().any(|f| f.item_count == 0),
                "an empty file"
            );
            assert!(plan.files.len() >= 3);
        }
        std::fs::remove_dir_all(&base).ok();
    }
}
