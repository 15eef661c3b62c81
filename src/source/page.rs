//! What flows out of a source: [`Page`]s of whole DynamoDB JSON export lines, each with
//! its [`Origin`] so any error or reject can say where it came from; and what a resumed
//! split skips ([`Resume`]: the line ranges already committed).
//!
//! Input: lines read from a split, and its committed ranges. Output: the pages still to load.

use std::fmt;
use std::sync::Arc;

/// Where a page of records came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An export data file, by its key in the manifest.
    ExportFile { key: Arc<str> },
    /// A scan segment.
    Segment { segment: u32, total: u32 },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::ExportFile { key } => write!(f, "{key}"),
            Origin::Segment { segment, total } => write!(f, "segment {segment} of {total}"),
        }
    }
}

/// Whole lines of DynamoDB JSON read from one split.
#[derive(Debug)]
pub struct Page {
    pub origin: Origin,
    /// 1-based number of the first line in `data` (for a scan segment: of the item).
    pub first_line: u64,
    /// Lines in `data`, empty ones included: the page covers `first_line ..
    /// first_line + lines`.
    pub lines: u64,
    /// Whole lines, newline-separated (the last may lack its newline).
    pub data: Vec<u8>,
    /// A scan segment's position after this page's last line: the `LastEvaluatedKey` as
    /// DynamoDB JSON, where a resumed scan can start (`None` at the segment's end and for
    /// files).
    pub edge: Option<Arc<str>>,
    /// Rows already mapped (a snapshot's Parquet): `lines` rows, one per line, and no
    /// `data` to decode.
    pub rows: Option<arrow_array::RecordBatch>,
}

impl Page {
    /// The last line this page covers.
    #[must_use]
    pub fn last_line(&self) -> u64 {
        self.first_line + self.lines.max(1) - 1
    }
}

/// Where a split's read starts, and which of its lines are already loaded.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Line ranges (inclusive, sorted, merged) already committed: not handed out again.
    pub done: Vec<(u64, u64)>,
    /// A scan segment's saved position: after line `.0` the scan goes on at key `.1`
    /// (DynamoDB JSON).
    pub start: Option<(u64, String)>,
}

impl Resume {
    /// Whether nothing is skipped.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.done.is_empty() && self.start.is_none()
    }
}

/// The line ranges of `first..=last` outside the `done` ones (sorted, merged).
fn kept_ranges(first: u64, last: u64, done: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut line = first;
    while line <= last {
        if let Some(&(_, b)) = done.iter().find(|&&(a, b)| a <= line && line <= b) {
            line = b.saturating_add(1);
            continue;
        }
        let end = done
            .iter()
            .filter(|&&(a, _)| a > line)
            .map(|&(a, _)| a - 1)
            .min()
            .unwrap_or(last)
            .min(last);
        out.push((line, end));
        line = end + 1;
    }
    out
}

/// Merges inclusive line ranges: sorted, overlapping and touching ones joined.
#[must_use]
pub fn merge_ranges(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The last line `L` such that lines `1..=L` are all in `done` (0 when line 1 is not).
#[must_use]
pub fn done_prefix(done: &[(u64, u64)]) -> u64 {
    match done.first() {
        Some(&(1, b)) => b,
        _ => 0,
    }
}

/// Cuts the lines listed in `done` (merged ranges) out of a page: what is left, as pages
/// of consecutive lines. A page with nothing done comes back whole.
#[must_use]
pub fn split_page(page: Page, done: &[(u64, u64)]) -> Vec<Page> {
    let (first, last) = (page.first_line, page.last_line());
    if page.lines == 0 || !done.iter().any(|&(a, b)| a <= last && b >= first) {
        return vec![page];
    }
    if let Some(rows) = &page.rows {
        return kept_ranges(first, last, done)
            .into_iter()
            .map(|(a, b)| Page {
                origin: page.origin.clone(),
                first_line: a,
                lines: b - a + 1,
                data: Vec::new(),
                edge: None,
                rows: Some(rows.slice((a - first) as usize, (b - a + 1) as usize)),
            })
            .collect();
    }
    // Byte offset where each line starts, and the end.
    let mut starts: Vec<usize> = Vec::with_capacity(page.lines as usize + 1);
    starts.push(0);
    for p in memchr::memchr_iter(b'\n', &page.data) {
        if p + 1 < page.data.len() {
            starts.push(p + 1);
        }
    }
    starts.truncate(page.lines as usize);
    starts.push(page.data.len());
    kept_ranges(first, last, done)
        .into_iter()
        .map(|(line, end)| {
            let (i, j) = ((line - first) as usize, (end - first + 1) as usize);
            Page {
                origin: page.origin.clone(),
                first_line: line,
                lines: end - line + 1,
                data: page.data[starts[i]..starts[j]].to_vec(),
                edge: if end == last { page.edge.clone() } else { None },
                rows: None,
            }
        })
        .collect()
}

/// What reading one data file found.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileStats {
    pub lines: u64,
    pub uncompressed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(first: u64, lines: &[&str], edge: Option<&str>) -> Page {
        let mut data = lines.join("\n").into_bytes();
        data.push(b'\n');
        Page {
            origin: Origin::Segment {
                segment: 0,
                total: 1,
            },
            first_line: first,
            lines: lines.len() as u64,
            data,
            edge: edge.map(Arc::from),
            rows: None,
        }
    }

    fn text(p: &Page) -> (u64, u64, String) {
        (
            p.first_line,
            p.lines,
            String::from_utf8(p.data.clone()).expect("utf8"),
        )
    }

    #[test]
    fn ranges_merge_and_their_prefix_is_what_is_done_from_line_one() {
        let m = merge_ranges(vec![(20, 30), (1, 5), (6, 10), (25, 40), (50, 50)]);
        assert_eq!(m, vec![(1, 10), (20, 40), (50, 50)]);
        assert_eq!(done_prefix(&m), 10);
        assert_eq!(done_prefix(&merge_ranges(vec![(2, 9)])), 0);
        assert_eq!(done_prefix(&[]), 0);
    }

    #[test]
    fn split_page_cuts_out_done_lines_and_keeps_numbers_and_the_edge() {
        let lines = ["a", "b", "", "d", "e", "f"];
        // Nothing done in this page: it comes back whole.
        let whole = split_page(page(11, &lines, Some("k")), &[(1, 10), (17, 20)]);
        assert_eq!(whole.len(), 1);
        assert_eq!(text(&whole[0]), (11, 6, "a\nb\n\nd\ne\nf\n".into()));
        // Lines 12 and 14..=15 done: 11, 13 and 16 are left, in three pages; only the last
        // keeps the scan position (it ends where the page ended).
        let parts = split_page(page(11, &lines, Some("k")), &[(12, 12), (14, 15)]);
        let got: Vec<_> = parts.iter().map(text).collect();
        assert_eq!(
            got,
            vec![
                (11, 1, "a\n".into()),
                (13, 1, "\n".into()),
                (16, 1, "f\n".into())
            ]
        );
        assert_eq!(parts[2].edge.as_deref(), Some("k"));
        assert!(parts[0].edge.is_none() && parts[1].edge.is_none());
        // All done: nothing left.
        assert!(split_page(page(11, &lines, None), &[(1, 100)]).is_empty());
        // A last line without its newline.
        let mut p = page(1, &["x", "y", "z"], None);
        p.data.pop();
        let parts = split_page(p, &[(1, 1)]);
        assert_eq!(text(&parts[0]), (2, 2, "y\nz".into()));
    }
}
