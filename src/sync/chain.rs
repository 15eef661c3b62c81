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
