//! The chain rule of incremental exports (ARCHITECTURE §8): which of the exports found
//! under a table's prefix apply, in which order, and whether they leave a gap after the
//! load's baseline or after each other.
//!
//! Input: the exports found, those applied, the baseline. Output: the exports to apply,
//! with the warnings (overlaps, exports covered already), or the gap that refuses them.

use crate::load::changes::{AppliedExport, BaseLoad};
use crate::scalar::time::format_timestamp;
use crate::source::changes::Found;

/// What a table's chain says.
#[derive(Debug, Default)]
pub struct Plan {
    /// The exports to apply, in order.
    pub apply: Vec<Found>,
    /// Overlaps, exports covered by what is applied, exports of another table.
    pub warnings: Vec<String>,
    /// Gaps found: (seconds, message). Refused unless `--allow-gap`.
    pub gaps: Vec<(f64, String)>,
    /// Exports of the same table whose `tableId` differs from the load's: recreated.
    pub recreated: Vec<String>,
}

fn at(micros: i64) -> String {
    format_timestamp(micros, true)
}

/// Orders the exports of `found` not yet applied and checks them against the baseline
/// (or the last applied export's end) and each other.
#[must_use]
pub fn plan(base: &BaseLoad, baseline: i64, found: &[Found], applied: &[AppliedExport]) -> Plan {
    let mut out = Plan::default();
    let mut cursor = baseline;
    let mut after = format!("the load's baseline {}", at(baseline));
    if let Some(last) = applied.iter().max_by_key(|a| a.to_micros) {
        cursor = cursor.max(last.to_micros);
        after = format!(
            "the end of applied export {} ({})",
            last.export_arn, last.to
        );
    }
    for e in found {
        let arn = e.arn();
        if applied.iter().any(|a| a.export_arn == arn) {
            continue;
        }
        if let (Some(want), Some(got)) = (&base.table_arn, &e.summary.table_arn) {
            if want != got {
                out.warnings.push(format!(
                    "export {arn} is of table {got}, not {want}: ignored"
                ));
                continue;
            }
        }
        if let (Some(want), Some(got)) = (&base.table_id, &e.summary.table_id) {
            if want != got {
                out.recreated.push(format!(
                    "export {arn} is of table id {got}, the load's export of table id {want}: the DynamoDB table was deleted and created again since the load"
                ));
                continue;
            }
        }
        if e.to <= cursor {
            out.warnings.push(format!(
                "export {arn} ({} to {}) ends before {after}: its changes are in the table already; skipped",
                at(e.from),
                at(e.to)
            ));
            continue;
        }
        if e.from > cursor {
            let secs = (e.from - cursor) as f64 / 1e6;
            out.gaps.push((
                secs,
                format!(
                    "a gap of {secs:.3} s between {after} and the start of export {arn} ({}): changes made then are in no export",
                    at(e.from)
                ),
            ));
        } else if e.from < cursor {
            out.warnings.push(format!(
                "export {arn} starts {:.3} s before {after}: the overlap is applied again (an item created and deleted inside it is in no export; `verify` against the live table finds what that may miss)",
                (cursor - e.from) as f64 / 1e6
            ));
        }
        cursor = e.to;
        after = format!("the end of export {arn} ({})", at(e.to));
        out.apply.push(e.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::state::RunState;
    use crate::source::export::ManifestSummary;

    const S: i64 = 1_000_000;

    fn base() -> BaseLoad {
        BaseLoad {
            run: 1,
            state: RunState::Done,
            mode: "create".into(),
            baseline: None,
            baseline_micros: Some(0),
            table_arn: Some("arn:t".into()),
            table_id: Some("id-1".into()),
        }
    }

    fn found(id: &str, from: i64, to: i64, arn: &str, table_id: &str) -> Found {
        let summary: ManifestSummary = serde_json::from_value(serde_json::json!({
            "exportArn": format!("arn:t/export/{id}"),
            "tableArn": arn,
            "tableId": table_id,
        }))
        .expect("summary");
        Found {
            id: id.into(),
            location: id.into(),
            path: None,
            summary,
            from: from * S,
            to: to * S,
        }
    }

    fn applied(id: &str, to: i64) -> AppliedExport {
        AppliedExport {
            export_arn: format!("arn:t/export/{id}"),
            location: id.into(),
            from: String::new(),
            to: String::new(),
            to_micros: to * S,
            run: 2,
            inserted: 0,
            updated: 0,
            deleted: 0,
            rejected: 0,
            changes: 0,
            applied_at: String::new(),
        }
    }

    #[test]
    fn chained_windows_apply_in_order_and_a_gap_overlap_or_covered_export_is_named() {
        let all = [
            found("a", 0, 900, "arn:t", "id-1"),
            found("b", 900, 1800, "arn:t", "id-1"),
            found("c", 1740, 2700, "arn:t", "id-1"),
            found("x", 0, 900, "arn:other", "id-9"),
        ];
        let p = plan(&base(), 0, &all, &[]);
        let ids: Vec<&str> = p.apply.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(p.gaps.is_empty() && p.recreated.is_empty());
        assert!(
            p.warnings.iter().any(|w| w.contains("60.000 s before")),
            "{:?}",
            p.warnings
        );
        assert!(
            p.warnings.iter().any(|w| w.contains("arn:other")),
            "{:?}",
            p.warnings
        );

        // After a and b are applied: c only; an export ending before b's end is skipped.
        let late = [found("old", 100, 800, "arn:t", "id-1"), all[2].clone()];
        let p = plan(&base(), 0, &late, &[applied("a", 900), applied("b", 1800)]);
        let ids: Vec<&str> = p.apply.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["c"]);
        assert!(
            p.warnings.iter().any(|w| w.contains("skipped")),
            "{:?}",
            p.warnings
        );

        // A first export starting after the baseline, a gap between two, another table id.
        let gapped = [
            found("a", 10, 900, "arn:t", "id-1"),
            found("b", 1000, 1800, "arn:t", "id-1"),
        ];
        let p = plan(&base(), 0, &gapped, &[]);
        let secs: Vec<f64> = p.gaps.iter().map(|g| g.0).collect();
        assert_eq!(secs, [10.0, 100.0]);
        let p = plan(&base(), 0, &[found("r", 0, 900, "arn:t", "id-2")], &[]);
        assert_eq!(p.recreated.len(), 1);
        assert!(p.apply.is_empty());
    }
}
