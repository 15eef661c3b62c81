//! Page of DynamoDB JSON lines → Arrow `RecordBatch` for one target table, plus the
//! rejects: items that break a rule, each with its line, key, attribute and reason.
//!
//! Input: raw bytes of whole lines and the table's [`TablePlan`]. Output: a
//! [`DecodedPage`]. A row is appended only when every column converted, so a rejected
//! item leaves nothing behind in the batch.
//!
//! (About 700 lines: the plan built once per table, the attribute lookup the parser's sink
//! calls, the per-column Arrow builders and the line loop are one hot path, kept in one
//! file so each piece inlines into the loop.)

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, FixedSizeBinaryBuilder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};

use crate::config::{ColumnSpec, Route, TableSpec};
use crate::convert::{self, Cell, Rule};
use crate::ddbjson::plain::{write_plain_json, write_plain_object};
use crate::ddbjson::{self, Av, Item, NulPolicy};
use crate::schema::{ColumnType, ElemType};

/// One column, prepared once per table.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub spec: ColumnSpec,
    pub rule: Rule,
    /// Required or part of the primary key: NULL (after the default) is a reject.
    pub not_null: bool,
    /// Part of the primary key (a delete's row holds only these).
    pub is_key: bool,
    pub default: Option<Cell<'static>>,
}

/// Everything decode and encode need about a table, built once.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub spec: TableSpec,
    pub columns: Vec<ColumnPlan>,
    pub schema: SchemaRef,
    /// Attribute name → the columns it feeds.
    attrs: AttrIndex,
    /// Per column, the entry in `attrs` of the attribute it takes (`NO_ENTRY`: none).
    col_entry: Vec<u32>,
    /// How an unmapped `M` or `L` is written straight to JSON for the rest column, when
    /// there is one (see [`ddbjson::parse_export_line_with`]).
    rest_plain: Option<NulPolicy>,
    /// Attribute names of the key columns, for reject records.
    key_attrs: Vec<String>,
    /// The lines are an incremental export's changes, and the last column is
    /// [`DELETE_COLUMN`] (see [`TablePlan::for_changes`]).
    pub changes: bool,
    /// The table's `where`, and the entry of its attribute.
    route: Option<(Route, u32)>,
    /// For the first table of a shared source: every table's `where` (`None`: takes
    /// every item), so the items that match none are counted once per source.
    source_routes: Option<Vec<Option<(Route, u32)>>>,
    /// With `source_routes`, when the source says `unrouted = "reject"`: the attribute and
    /// reason of the reject each item matching no table becomes.
    keep_unrouted: Option<(Option<String>, String)>,
    /// The child tables loaded from this table's items.
    pub children: Vec<ChildPlan>,
}

/// A child table's plan, held by its parent's: a row per element of the parent item's
/// list attribute.
#[derive(Debug, Clone)]
pub struct ChildPlan {
    /// The child's own plan: its element columns are found in it by attribute name.
    pub plan: TablePlan,
    /// The list attribute, and its entry in the parent's attributes.
    pub unnest: String,
    unnest_entry: u32,
    /// Per child column, where its value comes from.
    take: Vec<Take>,
    /// A table sharing the parent's source, read in its pass (see
    /// [`crate::config::TableSpec::take_riders`]): a row per item its `where` takes, its
    /// columns from the item's attributes.
    pub rides: bool,
    /// A rider's `where`, and the entry of its attribute in the parent's attributes.
    route: Option<(Route, u32)>,
}

/// Where a child table's column takes its value.
#[derive(Debug, Clone, Copy)]
enum Take {
    /// The element's attribute (`from`).
    Element,
    /// The parent row's column at this position.
    Parent(usize),
    /// The element's position in the list, from 0.
    Ordinal,
    /// A rider's column: the item's attribute at this entry of the parent's attributes.
    Item(u32),
}

/// The column a change's row carries besides the mapping's: `true` for a delete (only the
/// key columns then hold values), `false` for a put.
pub const DELETE_COLUMN: &str = "_ddb2pg_delete";

impl TablePlan {
    /// Prepares a table's columns (their defaults were converted with the config).
    #[must_use]
    pub fn new(spec: &TableSpec) -> TablePlan {
        let pk = spec.primary_key_indices();
        let mut columns = Vec::with_capacity(spec.columns.len());
        let mut fields = Vec::with_capacity(spec.columns.len());
        let mut by_attr: Vec<(String, Vec<usize>)> = Vec::new();
        let mut rest_plain = None;
        for (i, c) in spec.columns.iter().enumerate() {
            let not_null = c.required || pk.contains(&i);
            fields.push(Field::new(&c.name, c.ty.arrow_type(), !not_null || c.rest));
            let rule = Rule {
                ty: c.ty,
                strip_nul: c.strip_nul,
                unit: c.unit,
            };
            if c.rest {
                // Fed by the attributes no other column takes, written as JSON.
                rest_plain = Some(rule.nul_policy());
            } else if let Some(from) = &c.from {
                match by_attr.iter_mut().find(|(name, _)| name == from) {
                    Some((_, cols)) => cols.push(i),
                    None => by_attr.push((from.clone(), vec![i])),
                }
            }
            columns.push(ColumnPlan {
                spec: c.clone(),
                rule,
                not_null,
                is_key: pk.contains(&i),
                default: c.default.clone(),
            });
        }
        let mapped_attrs = by_attr.len();
        if let Some(r) = &spec.route {
            if !by_attr.iter().any(|(name, _)| name == &r.attribute) {
                by_attr.push((r.attribute.clone(), Vec::new()));
            }
        }
        // A child's list; a rider's attributes and its `where`'s (read for it, and kept
        // for this table's rest column as any attribute this table does not map).
        let mut rider_attrs: Vec<&str> = Vec::new();
        for c in &spec.children {
            let wanted: Vec<&str> = match c.rides {
                false => vec![c.unnest.as_str()],
                true => c
                    .table
                    .columns
                    .iter()
                    .filter_map(|col| col.from.as_deref())
                    .chain(c.table.route.as_ref().map(|r| r.attribute.as_str()))
                    .collect(),
            };
            for name in wanted {
                if c.rides {
                    rider_attrs.push(name);
                }
                if !by_attr.iter().any(|(n, _)| n == name) {
                    by_attr.push((name.to_string(), Vec::new()));
                }
            }
        }
        let route_attr = spec.route.as_ref().map(|r| r.attribute.as_str());
        // A rider takes its attributes as values, never as JSON written for this table.
        let unnested = |name: &str| {
            spec.children.iter().any(|c| !c.rides && c.unnest == name)
                || rider_attrs.contains(&name)
        };
        let attrs = AttrIndex::new(
            by_attr
                .into_iter()
                .enumerate()
                .map(|(at, (name, cols))| {
                    // Written straight to JSON only when every column it feeds is json
                    // or jsonb with the same handling of U+0000.
                    let mut policies = cols.iter().map(|&c| {
                        let rule = &columns[c].rule;
                        matches!(rule.ty, ColumnType::Json | ColumnType::Jsonb)
                            .then(|| rule.nul_policy())
                    });
                    let first = policies.next().flatten();
                    // A route's attribute is read as text, never written straight to JSON.
                    // So is a list child tables take their rows from.
                    let plain = if policies.all(|p| p == first)
                        && route_attr != Some(&name)
                        && !unnested(&name)
                    {
                        first
                    } else {
                        None
                    };
                    AttrEntry {
                        name,
                        plain,
                        // Fed to no column: the rest column still takes it.
                        also_rest: at >= mapped_attrs,
                    }
                })
                .collect(),
        );
        let col_entry = columns
            .iter()
            .map(|c| match (&c.spec.from, c.spec.rest) {
                (Some(from), false) => attrs.find(from).unwrap_or(NO_ENTRY),
                _ => NO_ENTRY,
            })
            .collect();
        let key_attrs = pk
            .iter()
            .filter_map(|&i| spec.columns[i].from.clone())
            .collect();
        let route = spec.route.as_ref().map(|r| {
            let entry = attrs.find(&r.attribute).unwrap_or(NO_ENTRY);
            (r.clone(), entry)
        });
        let children = spec
            .children
            .iter()
            .map(|c| ChildPlan {
                plan: TablePlan::new(&c.table),
                unnest: c.unnest.clone(),
                unnest_entry: match c.rides {
                    true => NO_ENTRY,
                    false => attrs.find(&c.unnest).unwrap_or(NO_ENTRY),
                },
                take: c
                    .table
                    .columns
                    .iter()
                    .map(|col| match (&col.parent, col.ordinal, c.rides) {
                        (_, _, true) => Take::Item(
                            col.from
                                .as_deref()
                                .and_then(|f| attrs.find(f))
                                .unwrap_or(NO_ENTRY),
                        ),
                        (Some(pc), _, false) => spec
                            .columns
                            .iter()
                            .position(|x| &x.name == pc)
                            .map_or(Take::Element, Take::Parent),
                        (None, true, false) => Take::Ordinal,
                        (None, false, false) => Take::Element,
                    })
                    .collect(),
                rides: c.rides,
                route: c
                    .table
                    .route
                    .as_ref()
                    .filter(|_| c.rides)
                    .map(|r| (r.clone(), attrs.find(&r.attribute).unwrap_or(NO_ENTRY))),
            })
            .collect();
        TablePlan {
            spec: spec.clone(),
            columns,
            schema: Arc::new(Schema::new(fields)),
            attrs,
            col_entry,
            rest_plain,
            key_attrs,
            changes: false,
            route,
            source_routes: None,
            keep_unrouted: None,
            children,
        }
    }

    /// The plan of the first table of a source other tables share: it also counts the
    /// items that match no table's `where` (`routes`: every sharing table's), and with
    /// `keep` (an attribute and a reason) rejects each of them too.
    #[must_use]
    pub fn counting_unrouted(
        spec: &TableSpec,
        routes: &[Option<Route>],
        keep: Option<(Option<String>, String)>,
    ) -> TablePlan {
        let mut plan = TablePlan::new(spec);
        // Every route's attribute is captured: entries added after the table's own (the
        // columns' entries keep their places).
        let mut entries = plan.attrs.entries.clone();
        for r in routes.iter().flatten() {
            if !entries.iter().any(|e| e.name == r.attribute) {
                entries.push(AttrEntry {
                    name: r.attribute.clone(),
                    plain: None,
                    also_rest: true,
                });
            }
        }
        plan.attrs = AttrIndex::new(entries);
        let find = |r: &Route| (r.clone(), plan.attrs.find(&r.attribute).unwrap_or(NO_ENTRY));
        plan.source_routes = Some(routes.iter().map(|r| r.as_ref().map(find)).collect());
        plan.keep_unrouted = keep;
        plan
    }

    /// The plan for a table's changes (incremental export lines): the mapping's columns,
    /// every one but the key's nullable (a delete's row holds only its key), then
    /// [`DELETE_COLUMN`].
    #[must_use]
    pub fn for_changes(spec: &TableSpec) -> TablePlan {
        let mut spec = spec.clone();
        spec.columns.push(ColumnSpec {
            name: DELETE_COLUMN.into(),
            from: None,
            ty: ColumnType::Bool,
            required: false,
            default: None,
            default_given: None,
            rest: false,
            strip_nul: false,
            unit: crate::scalar::time::EpochUnit::Seconds,
            unique: false,
            references: None,
            extract: None,
            parent: None,
            ordinal: false,
        });
        let mut plan = TablePlan::new(&spec);
        let fields: Vec<Field> = plan
            .schema
            .fields()
            .iter()
            .zip(&plan.columns)
            .map(|(f, c)| f.as_ref().clone().with_nullable(!c.is_key))
            .collect();
        plan.schema = Arc::new(Schema::new(fields));
        plan.changes = true;
        plan
    }

    /// The column types in order.
    pub fn types(&self) -> impl Iterator<Item = ColumnType> + '_ {
        self.columns.iter().map(|c| c.rule.ty)
    }
}

/// One attribute name of the mapping.
#[derive(Debug, Clone)]
struct AttrEntry {
    name: String,
    /// How its `M` or `L` values are written straight to JSON, when every column it
    /// feeds takes JSON the same way.
    plain: Option<NulPolicy>,
    /// Read only for a `where`: the rest column takes it too.
    also_rest: bool,
}

/// Attribute name → [`AttrEntry`], by open addressing on the name's length and its first
/// and last bytes (read as two words without a copy loop): cheaper than hashing every byte
/// of every attribute name of every item, and exact (names up to 16 bytes are equal when
/// their words are; longer ones are compared in full).
#[derive(Debug, Clone)]
struct AttrIndex {
    slots: Vec<Slot>,
    mask: usize,
    entries: Vec<AttrEntry>,
}

/// One place of the table: a name's key and its entry ([`NO_ENTRY`] when empty).
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: NameKey,
    entry: u32,
}

const NO_ENTRY: u32 = u32::MAX;

/// A name's length and two words that hold all of its bytes when it is at most 16 long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameKey {
    len: usize,
    first: u64,
    last: u64,
}

impl NameKey {
    #[inline(always)]
    fn of(name: &[u8]) -> NameKey {
        let w8 = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[..8]);
            u64::from_le_bytes(w)
        };
        let w4 = |b: &[u8]| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[..4]);
            u64::from(u32::from_le_bytes(w))
        };
        let len = name.len();
        let (first, last) = match len {
            0 => (0, 0),
            1..=3 => (
                u64::from(name[0]) | u64::from(name[len / 2]) << 8 | u64::from(name[len - 1]) << 16,
                0,
            ),
            4..=7 => (w4(name) | w4(&name[len - 4..]) << 32, 0),
            _ => (w8(name), w8(&name[len - 8..])),
        };
        NameKey { len, first, last }
    }

    #[inline]
    fn home(&self, mask: usize) -> usize {
        let h = (self.first ^ self.last.rotate_left(29) ^ self.len as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 40) as usize & mask
    }
}

impl AttrIndex {
    fn new(entries: Vec<AttrEntry>) -> AttrIndex {
        // At most a quarter full: probes stay short, and an empty slot always ends one.
        let size = (entries.len() * 4).next_power_of_two().max(8);
        let empty = Slot {
            key: NameKey::of(b""),
            entry: NO_ENTRY,
        };
        let mut slots = vec![empty; size];
        let mask = size - 1;
        for (e, entry) in entries.iter().enumerate() {
            let key = NameKey::of(entry.name.as_bytes());
            let mut i = key.home(mask);
            while slots[i].entry != NO_ENTRY {
                i = (i + 1) & mask;
            }
            slots[i] = Slot {
                key,
                entry: u32::try_from(e).unwrap_or(NO_ENTRY),
            };
        }
        AttrIndex {
            slots,
            mask,
            entries,
        }
    }

    /// The entry of `name`, as an index into `entries`.
    #[inline(always)]
    fn find(&self, name: &str) -> Option<u32> {
        let key = NameKey::of(name.as_bytes());
        let mut i = key.home(self.mask);
        loop {
            let slot = self.slots[i];
            if slot.entry == NO_ENTRY {
                return None;
            }
            if slot.key == key && (key.len <= 16 || self.entries[slot.entry as usize].name == name)
            {
                return Some(slot.entry);
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// An item that was not loaded, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    /// Line number in the split (1-based).
    pub line: u64,
    /// The key attributes as a plain JSON object, when the line parsed.
    pub key: Option<String>,
    pub attribute: Option<String>,
    pub reason: String,
    /// The original item as DynamoDB JSON, or the raw line as a JSON string when it did
    /// not parse.
    pub item: String,
    /// A line that was not UTF-8: `item` with its original bytes (the rejects file keeps
    /// them; `item` has U+FFFD in their place).
    pub item_raw: Option<Vec<u8>>,
    /// The table it was rejected for, when not the pass's own (a table riding on its
    /// source: see [`crate::config::TableSpec::take_riders`]).
    pub table: Option<Arc<str>>,
    /// An item that matches no table's `where`, kept because its source says
    /// `unrouted = "reject"`: no table's reject (`"table": null` in the file).
    pub unrouted: bool,
}

/// Result of decoding one page.
#[derive(Debug)]
pub struct DecodedPage {
    pub batch: RecordBatch,
    pub rejects: Vec<Reject>,
    /// Non-empty lines this table takes (rows + rejects).
    pub items: u64,
    /// Items its `where` leaves to other tables of the source.
    pub skipped: u64,
    /// Items no table of the source takes (counted by the source's first table only).
    pub unrouted: u64,
    /// Per child table (in the plan's order), the rows of the loaded items' elements.
    pub children: Vec<RecordBatch>,
    /// Per child table, for a table riding on the source: the items it takes (rows +
    /// its rejects) and those its `where` leaves (0, 0 for a child's list).
    pub riders: Vec<(u64, u64)>,
}

impl DecodedPage {
    /// The page as child table `view`'s (its rows in `batch`), or as it is (`None`).
    #[must_use]
    pub fn into_view(mut self, view: Option<usize>) -> DecodedPage {
        if let Some(i) = view.filter(|&i| i < self.children.len()) {
            self.batch = self.children.swap_remove(i);
            self.children.clear();
        }
        self
    }
}

impl TablePlan {
    /// The columns of the rows a page holds as [`DecodedPage::into_view`] gives them.
    #[must_use]
    pub fn view_columns(&self, view: Option<usize>) -> &[ColumnPlan] {
        match view.and_then(|i| self.children.get(i)) {
            Some(c) => &c.plan.columns,
            None => &self.columns,
        }
    }
}

/// One item's attributes as the mapping takes them, filled while the line is parsed.
struct ItemValues<'p, 'a> {
    plan: &'p TablePlan,
    /// Per mapping entry, its attribute's value (the last one when a name repeats).
    values: Vec<Option<Av<'a>>>,
    /// The attributes no column maps, in order, kept when the table has a rest column.
    unmapped: Item<'a>,
    /// The entry of the attribute being read (`NO_ENTRY`: unmapped).
    current: u32,
    /// Allocations of plain values done with, for the next items' (bounded by the most
    /// plain values one item holds).
    spare: Vec<String>,
    /// A change's DynamoDB key (its `Keys`), as a routed table needs it: whether the
    /// `where` attribute is part of it, and whether the table's key columns take all
    /// of it.
    route_in_key: bool,
    key_covered: bool,
}

impl<'p, 'a> ItemValues<'p, 'a> {
    fn new(plan: &'p TablePlan) -> Self {
        ItemValues {
            plan,
            values: (0..plan.attrs.entries.len()).map(|_| None).collect(),
            unmapped: Vec::new(),
            current: NO_ENTRY,
            spare: Vec::new(),
            route_in_key: false,
            key_covered: false,
        }
    }

    /// Empties it for the next item.
    fn clear(&mut self) {
        for v in &mut self.values {
            if let Some(Av::Plain(json)) = v.take() {
                self.spare.push(json);
            }
        }
        for (_, v) in self.unmapped.drain(..) {
            if let Av::Plain(json) = v {
                self.spare.push(json);
            }
        }
    }

    /// The value of a mapping entry.
    fn get(&self, entry: u32) -> Option<&Av<'a>> {
        self.values.get(entry as usize).and_then(Option::as_ref)
    }
}

impl<'a> ddbjson::ItemSink<'a> for ItemValues<'_, 'a> {
    #[inline]
    fn plain(&mut self, name: &str) -> Option<NulPolicy> {
        match self.plan.attrs.find(name) {
            Some(e) => {
                self.current = e;
                self.plan.attrs.entries[e as usize].plain
            }
            None => {
                self.current = NO_ENTRY;
                self.plan.rest_plain
            }
        }
    }

    #[inline]
    fn put(&mut self, name: Cow<'a, str>, value: Av<'a>) {
        match self.values.get_mut(self.current as usize) {
            Some(slot) => {
                if self.plan.rest_plain.is_some()
                    && self.plan.attrs.entries[self.current as usize].also_rest
                {
                    self.unmapped.push((name, value.clone()));
                }
                *slot = Some(value);
            }
            None if self.plan.rest_plain.is_some() => self.unmapped.push((name, value)),
            None => {}
        }
    }

    fn keys(&mut self, keys: &[(Cow<'a, str>, Av<'a>)]) {
        if let Some((route, _)) = &self.plan.route {
            self.route_in_key = keys.iter().any(|(n, _)| n == &route.attribute);
            self.key_covered = keys
                .iter()
                .all(|(n, _)| self.plan.key_attrs.iter().any(|k| k == n));
        }
    }

    #[inline]
    fn buffer(&mut self) -> String {
        self.spare
            .pop()
            .unwrap_or_else(|| String::with_capacity(256))
    }
}

/// Decodes a source's page: its lines, or — a snapshot's page — the rows it already holds.
///
/// # Errors
/// As [`decode_lines`].
pub fn decode_page(plan: &TablePlan, page: &crate::source::Page) -> Result<DecodedPage, String> {
    match &page.rows {
        Some(rows) => Ok(DecodedPage {
            batch: rows.clone(),
            rejects: Vec::new(),
            items: rows.num_rows() as u64,
            skipped: 0,
            unrouted: 0,
            children: Vec::new(),
            riders: Vec::new(),
        }),
        None => decode_lines(plan, &page.data, page.first_line),
    }
}

/// Decodes whole lines (`first_line` is the 1-based number of the first).
///
/// # Errors
/// Only if Arrow refuses the batch, which would be a bug in the builders.
pub fn decode_lines(plan: &TablePlan, data: &[u8], first_line: u64) -> Result<DecodedPage, String> {
    let mut builders: Vec<ColBuilder> = plan
        .columns
        .iter()
        .map(|c| ColBuilder::new(c.rule.ty, 1024))
        .collect();
    let mut child_builders: Vec<Vec<ColBuilder>> = plan
        .children
        .iter()
        .map(|c| {
            c.plan
                .columns
                .iter()
                .map(|col| ColBuilder::new(col.rule.ty, 1024))
                .collect()
        })
        .collect();
    let mut rejects = Vec::new();
    let (mut items, mut skipped, mut unrouted) = (0u64, 0u64, 0u64);
    let mut values = ItemValues::new(plan);
    // Reused across items; `recycle` re-types them for each item's borrow.
    let mut cells_buf: Vec<Cell<'_>> = Vec::with_capacity(plan.columns.len());
    let mut child_buf: Vec<Vec<Cell<'_>>> = plan.children.iter().map(|_| Vec::new()).collect();
    let mut slots_buf: Vec<Option<&Av<'_>>> = Vec::new();
    let has_riders = plan.children.iter().any(|c| c.rides);
    let mut riders: Vec<(u64, u64)> = vec![(0, 0); plan.children.len()];
    let mut line_no = first_line;
    let mut start = 0;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |p| start + p);
        let line = &data[start..end];
        start = end + 1;
        let this_line = line_no;
        line_no += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        values.clear();
        let parsed = if plan.changes {
            ddbjson::parse_change_line_with(line, &mut values).map(Some)
        } else {
            ddbjson::parse_export_line_with(line, &mut values).map(|()| None)
        };
        let op = match parsed {
            Ok(op) => op,
            Err(e) => {
                items += 1;
                // A line of an Ion export that was not valid Ion (see `ddbjson::ion`).
                if let Some((ion, original)) = ddbjson::ion::bad_line(line) {
                    let mut item = String::new();
                    ddbjson::write_json_string(&mut item, &original);
                    rejects.push(Reject {
                        line: this_line,
                        key: None,
                        attribute: ion.attribute,
                        reason: format!("invalid Ion at byte {}: {}", ion.offset, ion.reason),
                        item,
                        item_raw: None,
                        table: None,
                        unrouted: false,
                    });
                    continue;
                }
                let (key, item) = salvage(plan, line);
                rejects.push(Reject {
                    line: this_line,
                    key,
                    attribute: e.attribute,
                    reason: format!("invalid DynamoDB JSON at byte {}: {}", e.offset, e.reason),
                    item,
                    item_raw: raw_item(line),
                    table: None,
                    unrouted: false,
                });
                continue;
            }
        };
        if let Some(routes) = &plan.source_routes {
            if !routes
                .iter()
                .any(|r| r.as_ref().is_none_or(|r| routed(&values, r)))
            {
                unrouted += 1;
                if let Some((attribute, reason)) = &plan.keep_unrouted {
                    rejects.push(Reject {
                        line: this_line,
                        key: key_json(plan, &values),
                        attribute: attribute.clone(),
                        reason: reason.clone(),
                        item: ddb_item_text(line),
                        item_raw: None,
                        table: None,
                        unrouted: true,
                    });
                }
            }
        }
        let mut kids: Vec<Vec<Cell<'_>>> = child_buf.drain(..).map(recycle).collect();
        // The tables riding on this source take the item whatever this table does.
        if has_riders {
            map_riders(
                plan,
                &values,
                (this_line, line),
                (&mut kids, &mut child_builders),
                &mut riders,
                &mut rejects,
            );
        }
        let mut cells = recycle(std::mem::take(&mut cells_buf));
        let mut delete = op == Some(ddbjson::ChangeOp::Delete);
        if let Some(route) = &plan.route {
            if !routed(&values, route) {
                // A change to an item this table no longer takes (its `where` attribute
                // changed: not a key attribute) deletes its row — when the table's key
                // is the item's whole DynamoDB key, so no other item's row can be hit.
                // A `where` on a key attribute never matches another item's change.
                let gone = plan.changes
                    && !values.route_in_key
                    && values.key_covered
                    && map_item(plan, &values, &mut cells, true).is_ok();
                if !gone {
                    skipped += 1;
                    cells_buf = recycle(cells);
                    child_buf = kids.into_iter().map(recycle).collect();
                    continue;
                }
                cells.clear();
                delete = true;
            }
        }
        items += 1;
        let mut mapped = map_item(plan, &values, &mut cells, delete);
        if let (Some(_), Some(last)) = (op, cells.last_mut()) {
            *last = Cell::Bool(delete);
        }
        let mut slots = recycle(std::mem::take(&mut slots_buf));
        // A delete's children go with it (its row holds only the key).
        if mapped.is_ok() && !delete && !plan.children.is_empty() {
            mapped = map_children(plan, &values, &cells, &mut kids, &mut slots);
        }
        if mapped.is_ok() {
            for (b, cell) in builders.iter_mut().zip(cells.drain(..)) {
                b.append(cell);
            }
            for ((child, builders), rows) in
                plan.children.iter().zip(&mut child_builders).zip(&mut kids)
            {
                if child.rides {
                    continue;
                }
                // Row-major: cell k is column k % width.
                let width = child.plan.columns.len().max(1);
                for (k, cell) in rows.drain(..).enumerate() {
                    builders[k % width].append(cell);
                }
            }
        }
        child_buf = kids.into_iter().map(recycle).collect();
        slots_buf = recycle(slots);
        cells_buf = recycle(cells);
        if let Err((attribute, reason)) = mapped {
            rejects.push(Reject {
                line: this_line,
                key: key_json(plan, &values),
                attribute,
                reason,
                item: if plan.changes {
                    // The change record as it was (it parsed: it is JSON).
                    String::from_utf8_lossy(line).into_owned()
                } else {
                    ddb_item_text(line)
                },
                item_raw: None,
                table: None,
                unrouted: false,
            });
        }
    }
    let arrays: Vec<ArrayRef> = builders.into_iter().map(ColBuilder::finish).collect();
    let batch = RecordBatch::try_new(plan.schema.clone(), arrays).map_err(|e| e.to_string())?;
    let children = plan
        .children
        .iter()
        .zip(child_builders)
        .map(|(c, b)| {
            let arrays: Vec<ArrayRef> = b.into_iter().map(ColBuilder::finish).collect();
            RecordBatch::try_new(c.plan.schema.clone(), arrays).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DecodedPage {
        batch,
        rejects,
        items,
        skipped,
        unrouted,
        children,
        riders,
    })
}

/// The rows of an item for the tables riding on its source: each whose `where` it matches
/// takes a row (appended to its builders) or rejects it (a reject naming that table).
fn map_riders<'x>(
    plan: &TablePlan,
    item: &'x ItemValues<'_, '_>,
    (line_no, line): (u64, &[u8]),
    (kids, builders): (&mut [Vec<Cell<'x>>], &mut [Vec<ColBuilder>]),
    counts: &mut [(u64, u64)],
    rejects: &mut Vec<Reject>,
) {
    for (k, child) in plan.children.iter().enumerate() {
        if !child.rides {
            continue;
        }
        if !child.route.as_ref().is_none_or(|r| routed(item, r)) {
            counts[k].1 += 1;
            continue;
        }
        counts[k].0 += 1;
        let row = &mut kids[k];
        row.clear();
        let mut mapped = Ok(());
        for (col, take) in child.plan.columns.iter().zip(&child.take) {
            let slot = match *take {
                Take::Item(entry) => item.get(entry),
                _ => None,
            };
            match column_cell(col, slot, false) {
                Ok(cell) => row.push(cell),
                Err(e) => {
                    mapped = Err(e);
                    break;
                }
            }
        }
        match mapped {
            Ok(()) => {
                for (b, cell) in builders[k].iter_mut().zip(row.drain(..)) {
                    b.append(cell);
                }
            }
            Err((attribute, reason)) => {
                row.clear();
                rejects.push(Reject {
                    line: line_no,
                    key: keys_json(plan, &child.plan.key_attrs, item),
                    attribute,
                    reason,
                    item: ddb_item_text(line),
                    item_raw: None,
                    table: Some(Arc::from(child.plan.spec.name.as_str())),
                    unrouted: false,
                });
            }
        }
    }
}

/// The child tables' rows of one item (its parent row mapped into `parent`): per child,
/// a row per element of its list, flat in `out` (a child's columns per row); the first
/// element that breaks a rule is the item's error, its attribute written
/// `list[position].attribute`. A missing or NULL list has no rows.
fn map_children<'x>(
    plan: &TablePlan,
    item: &'x ItemValues<'_, '_>,
    parent: &[Cell<'x>],
    out: &mut [Vec<Cell<'x>>],
    slots: &mut Vec<Option<&'x Av<'x>>>,
) -> Result<(), (Option<String>, String)> {
    for (child, rows) in plan.children.iter().zip(out.iter_mut()) {
        if child.rides {
            continue;
        }
        let table = &child.plan.spec.name;
        let elems = match item.get(child.unnest_entry) {
            None | Some(Av::Null) => continue,
            Some(Av::L(elems)) => elems,
            Some(other) => {
                return Err((
                    Some(child.unnest.clone()),
                    format!(
                        "is {}, but child table `{table}` takes a row per element of a list (L)",
                        other.type_name()
                    ),
                ))
            }
        };
        for (i, e) in elems.iter().enumerate() {
            let Av::M(entries) = e else {
                return Err((
                    Some(format!("{}[{i}]", child.unnest)),
                    format!(
                        "is {}, but child table `{table}` takes a map (M) per element",
                        e.type_name()
                    ),
                ));
            };
            slots.clear();
            slots.resize(child.plan.attrs.entries.len(), None);
            for (name, v) in entries {
                if let Some(at) = child.plan.attrs.find(name) {
                    slots[at as usize] = Some(v);
                }
            }
            for (j, (col, take)) in child.plan.columns.iter().zip(&child.take).enumerate() {
                let cell = match *take {
                    Take::Parent(k) => parent.get(k).cloned().unwrap_or(Cell::Null),
                    Take::Ordinal => ordinal_cell(col.rule.ty, i).ok_or_else(|| {
                        (
                            Some(child.unnest.clone()),
                            format!(
                                "has more than {} elements, more than column `{}` ({}) holds",
                                i, col.spec.name, col.rule.ty
                            ),
                        )
                    })?,
                    // A rider's column (not in a child's list): never here.
                    Take::Item(_) => Cell::Null,
                    Take::Element => {
                        let slot = slots
                            .get(child.plan.col_entry[j] as usize)
                            .copied()
                            .flatten();
                        column_cell(col, slot, false).map_err(|(attr, why)| {
                            (
                                Some(format!(
                                    "{}[{i}].{}",
                                    child.unnest,
                                    attr.unwrap_or_default()
                                )),
                                format!("{why} in child table `{table}`"),
                            )
                        })?
                    }
                };
                rows.push(cell);
            }
        }
    }
    Ok(())
}

/// An element's position as an ordinal column's cell (`None`: it does not fit).
fn ordinal_cell(ty: ColumnType, i: usize) -> Option<Cell<'static>> {
    match ty {
        ColumnType::Int2 => i16::try_from(i).ok().map(Cell::I16),
        ColumnType::Int4 => i32::try_from(i).ok().map(Cell::I32),
        _ => i64::try_from(i).ok().map(Cell::I64),
    }
}

/// Whether an item's attribute matches a `where` (its text: `S`, `N` as written, `BOOL`).
fn routed(item: &ItemValues<'_, '_>, (route, entry): &(Route, u32)) -> bool {
    let text = match item.get(*entry) {
        Some(Av::S(s) | Av::N(s)) => Some(s.as_ref()),
        Some(Av::Bool(true)) => Some("true"),
        Some(Av::Bool(false)) => Some("false"),
        _ => None,
    };
    route.matches(text)
}

/// Empties a vector and gives back its allocation typed for another lifetime (the
/// standard library reuses the buffer when element layouts match).
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter()
        .map(|_| -> U { unreachable_empty() })
        .collect()
}

fn unreachable_empty<U>() -> U {
    // `recycle` maps an empty vector: this is never called.
    panic!("recycle maps only empty vectors")
}

/// The item of a rejected line in DynamoDB JSON, as the tree writes it (the line parsed
/// once already; the values written straight to JSON while parsing are trees again here).
fn ddb_item_text(line: &[u8]) -> String {
    let mut s = String::new();
    match ddbjson::parse_export_line(line) {
        Ok(tree) => ddbjson::write_ddb_item(&mut s, &tree),
        Err(_) => ddbjson::write_json_string(&mut s, &String::from_utf8_lossy(line)),
    }
    s
}

/// Maps one item's values into `cells` (one per column); for a delete (`keys_only`) only
/// the key columns, the others NULL.
fn map_item<'x>(
    plan: &TablePlan,
    item: &'x ItemValues<'_, '_>,
    cells: &mut Vec<Cell<'x>>,
    keys_only: bool,
) -> Result<(), (Option<String>, String)> {
    for (i, col) in plan.columns.iter().enumerate() {
        let cell = if keys_only && !col.is_key {
            Cell::Null
        } else if col.spec.rest {
            let mut out = String::with_capacity(128);
            let mut nul = col.rule.nul_policy();
            write_plain_object(&mut out, &item.unmapped, &mut nul).map_err(|r| {
                (
                    Some(col.spec.name.clone()),
                    format!("unmapped attributes for `{}`: {r}", col.spec.name),
                )
            })?;
            Cell::Str(Cow::Owned(out))
        } else {
            column_cell(col, item.get(plan.col_entry[i]), keys_only)?
        };
        cells.push(cell);
    }
    Ok(())
}

/// One column's cell from its attribute's value (`None`: missing): the default, NULL, or
/// the value converted by the column's rules; a rule broken is `(attribute, reason)`.
fn column_cell<'x>(
    col: &ColumnPlan,
    slot: Option<&'x Av<'_>>,
    keys_only: bool,
) -> Result<Cell<'x>, (Option<String>, String)> {
    Ok(match slot {
        None | Some(Av::Null) => match &col.default {
            Some(d) => d.clone(),
            None if col.not_null => {
                let attr = col.spec.from.clone().unwrap_or_default();
                let what = match (slot.is_some(), keys_only) {
                    (true, _) => "is NULL",
                    (false, false) => "is missing",
                    (false, true) => "is missing from the delete's Keys",
                };
                let why = if col.spec.required {
                    "required"
                } else {
                    "part of the primary key"
                };
                return Err((
                    Some(attr),
                    format!("{what}, but column `{}` is {why}", col.spec.name),
                ));
            }
            None => Cell::Null,
        },
        Some(v) => match &col.spec.extract {
            None => convert::convert(&col.rule, v),
            Some(x) => extract(col, x, v),
        }
        .map_err(|reason| {
            (
                col.spec.from.clone(),
                format!("{reason} (column `{}` {})", col.spec.name, col.rule.ty),
            )
        })?,
    })
}

/// The part of a string value a `strip_prefix` / `regex` column takes, converted by the
/// column's rules (a number for a numeric column).
fn extract(
    col: &ColumnPlan,
    x: &crate::config::Extract,
    v: &Av<'_>,
) -> Result<Cell<'static>, String> {
    let Av::S(s) = v else {
        return Err(format!(
            "is {}, but strip_prefix and regex take a string (S)",
            v.type_name()
        ));
    };
    let part = x.apply(s).map_err(|why| {
        let shown: String = s.chars().take(80).collect();
        format!("\"{shown}\" {why}")
    })?;
    let numeric = matches!(
        col.rule.ty,
        ColumnType::Int2
            | ColumnType::Int4
            | ColumnType::Int8
            | ColumnType::Numeric(_)
            | ColumnType::Float4
            | ColumnType::Float8
    );
    let value = if numeric {
        Av::N(Cow::Borrowed(part))
    } else {
        Av::S(Cow::Borrowed(part))
    };
    convert::convert(&col.rule, &value).map(Cell::into_owned)
}

/// A line that is not UTF-8, as a JSON string keeping its bytes (only `"`, `\\` and
/// control characters escaped).
fn raw_item(line: &[u8]) -> Option<Vec<u8>> {
    if std::str::from_utf8(line).is_ok() {
        return None;
    }
    let mut out = Vec::with_capacity(line.len() + 2);
    out.push(b'"');
    for &b in line {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
    Some(out)
}

/// For a line our parser refused: the key and the item as they stand, when the line is at
/// least JSON (so the record keeps the original item); else no key and the raw line.
fn salvage(plan: &TablePlan, line: &[u8]) -> (Option<String>, String) {
    let raw = || {
        let mut s = String::new();
        ddbjson::write_json_string(&mut s, &String::from_utf8_lossy(line));
        s
    };
    let Ok(serde_json::Value::Object(doc)) = serde_json::from_slice::<serde_json::Value>(line)
    else {
        return (None, raw());
    };
    let found = ["Item", "NewImage", "Keys"]
        .iter()
        .find_map(|k| match doc.get(*k) {
            Some(serde_json::Value::Object(item)) => Some(item.clone()),
            _ => None,
        });
    let Some(item) = found else {
        return (None, raw());
    };
    let whole = doc.contains_key("Keys");
    let mut key = serde_json::Map::new();
    for k in &plan.key_attrs {
        if let Some(serde_json::Value::Object(typed)) = item.get(k) {
            if let Some((tag, v)) = typed.iter().next() {
                if typed.len() == 1 && matches!(tag.as_str(), "S" | "N" | "B") {
                    key.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let key = (!key.is_empty()).then(|| serde_json::Value::Object(key).to_string());
    let text = if whole {
        // A change record: kept whole.
        serde_json::Value::Object(doc).to_string()
    } else {
        serde_json::Value::Object(item).to_string()
    };
    (key, text)
}

fn key_json(plan: &TablePlan, item: &ItemValues<'_, '_>) -> Option<String> {
    keys_json(plan, &plan.key_attrs, item)
}

/// The attributes `keys` of an item read with `plan`, as a plain JSON object.
fn keys_json(plan: &TablePlan, keys: &[String], item: &ItemValues<'_, '_>) -> Option<String> {
    let mut out = String::from("{");
    let mut n = 0;
    for k in keys {
        if let Some(v) = plan.attrs.find(k).and_then(|e| item.get(e)) {
            if n > 0 {
                out.push(',');
            }
            ddbjson::write_json_string(&mut out, k);
            out.push(':');
            let mut nul = NulPolicy::Keep;
            if write_plain_json(&mut out, v, &mut nul).is_err() {
                ddbjson::write_ddb_json(&mut out, v);
            }
            n += 1;
        }
    }
    out.push('}');
    (n > 0).then_some(out)
}

/// A typed Arrow builder for one column.
enum ColBuilder {
    Utf8(StringBuilder),
    Uuid(FixedSizeBinaryBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Bin(BinaryBuilder),
    ListUtf8(ListBuilder<StringBuilder>),
    ListI32(ListBuilder<Int32Builder>),
    ListI64(ListBuilder<Int64Builder>),
    ListBin(ListBuilder<BinaryBuilder>),
}

impl ColBuilder {
    fn new(ty: ColumnType, cap: usize) -> ColBuilder {
        match ty {
            ColumnType::Text
            | ColumnType::Varchar(_)
            | ColumnType::Numeric(_)
            | ColumnType::Json
            | ColumnType::Jsonb => ColBuilder::Utf8(StringBuilder::with_capacity(cap, cap * 16)),
            ColumnType::Uuid => ColBuilder::Uuid(FixedSizeBinaryBuilder::with_capacity(cap, 16)),
            ColumnType::Int2 => ColBuilder::I16(Int16Builder::with_capacity(cap)),
            ColumnType::Int4 => ColBuilder::I32(Int32Builder::with_capacity(cap)),
            ColumnType::Int8 => ColBuilder::I64(Int64Builder::with_capacity(cap)),
            ColumnType::Float4 => ColBuilder::F32(Float32Builder::with_capacity(cap)),
            ColumnType::Float8 => ColBuilder::F64(Float64Builder::with_capacity(cap)),
            ColumnType::Bool => ColBuilder::Bool(BooleanBuilder::with_capacity(cap)),
            ColumnType::Date => ColBuilder::Date(Date32Builder::with_capacity(cap)),
            ColumnType::Timestamp => {
                ColBuilder::Ts(TimestampMicrosecondBuilder::with_capacity(cap))
            }
            ColumnType::Timestamptz => {
                ColBuilder::Ts(TimestampMicrosecondBuilder::with_capacity(cap).with_timezone("UTC"))
            }
            ColumnType::Bytea => ColBuilder::Bin(BinaryBuilder::with_capacity(cap, cap * 16)),
            ColumnType::Array(ElemType::Text | ElemType::Numeric) => {
                ColBuilder::ListUtf8(ListBuilder::new(StringBuilder::new()))
            }
            ColumnType::Array(ElemType::Int4) => {
                ColBuilder::ListI32(ListBuilder::new(Int32Builder::new()))
            }
            ColumnType::Array(ElemType::Int8) => {
                ColBuilder::ListI64(ListBuilder::new(Int64Builder::new()))
            }
            ColumnType::Array(ElemType::Bytea) => {
                ColBuilder::ListBin(ListBuilder::new(BinaryBuilder::new()))
            }
        }
    }

    /// Appends a cell that was converted for this column's type.
    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (ColBuilder::Utf8(b), Cell::Str(s)) => b.append_value(s),
            (ColBuilder::Uuid(b), Cell::Uuid(u)) => {
                // The builder's width is 16 and `u` is 16 bytes, so this cannot fail.
                let _ = b.append_value(u);
            }
            (ColBuilder::I16(b), Cell::I16(v)) => b.append_value(v),
            (ColBuilder::I32(b), Cell::I32(v)) => b.append_value(v),
            (ColBuilder::I64(b), Cell::I64(v)) => b.append_value(v),
            (ColBuilder::F32(b), Cell::F32(v)) => b.append_value(v),
            (ColBuilder::F64(b), Cell::F64(v)) => b.append_value(v),
            (ColBuilder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (ColBuilder::Date(b), Cell::Date(v)) => b.append_value(v),
            (ColBuilder::Ts(b), Cell::Micros(v)) => b.append_value(v),
            (ColBuilder::Bin(b), Cell::Bytes(v)) => b.append_value(v),
            (ColBuilder::ListUtf8(b), Cell::List(items)) => {
                for c in items {
                    match c {
                        Cell::Str(s) => b.values().append_value(s),
                        _ => b.values().append_null(),
                    }
                }
                b.append(true);
            }
            (ColBuilder::ListI32(b), Cell::List(items)) => {
                for c in items {
                    match c {
                        Cell::I32(v) => b.values().append_value(v),
                        _ => b.values().append_null(),
                    }
                }
                b.append(true);
            }
            (ColBuilder::ListI64(b), Cell::List(items)) => {
                for c in items {
                    match c {
                        Cell::I64(v) => b.values().append_value(v),
                        _ => b.values().append_null(),
                    }
                }
                b.append(true);
            }
            (ColBuilder::ListBin(b), Cell::List(items)) => {
                for c in items {
                    match c {
                        Cell::Bytes(v) => b.values().append_value(v),
                        _ => b.values().append_null(),
                    }
                }
                b.append(true);
            }
            (me, _) => me.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColBuilder::Utf8(b) => b.append_null(),
            ColBuilder::Uuid(b) => b.append_null(),
            ColBuilder::I16(b) => b.append_null(),
            ColBuilder::I32(b) => b.append_null(),
            ColBuilder::I64(b) => b.append_null(),
            ColBuilder::F32(b) => b.append_null(),
            ColBuilder::F64(b) => b.append_null(),
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::Date(b) => b.append_null(),
            ColBuilder::Ts(b) => b.append_null(),
            ColBuilder::Bin(b) => b.append_null(),
            ColBuilder::ListUtf8(b) => b.append(false),
            ColBuilder::ListI32(b) => b.append(false),
            ColBuilder::ListI64(b) => b.append(false),
            ColBuilder::ListBin(b) => b.append(false),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            ColBuilder::Utf8(mut b) => Arc::new(b.finish()),
            ColBuilder::Uuid(mut b) => Arc::new(b.finish()),
            ColBuilder::I16(mut b) => Arc::new(b.finish()),
            ColBuilder::I32(mut b) => Arc::new(b.finish()),
            ColBuilder::I64(mut b) => Arc::new(b.finish()),
            ColBuilder::F32(mut b) => Arc::new(b.finish()),
            ColBuilder::F64(mut b) => Arc::new(b.finish()),
            ColBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColBuilder::Date(mut b) => Arc::new(b.finish()),
            ColBuilder::Ts(mut b) => Arc::new(b.finish()),
            ColBuilder::Bin(mut b) => Arc::new(b.finish()),
            ColBuilder::ListUtf8(mut b) => Arc::new(b.finish()),
            ColBuilder::ListI32(mut b) => Arc::new(b.finish()),
            ColBuilder::ListI64(mut b) => Arc::new(b.finish()),
            ColBuilder::ListBin(mut b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, StringArray};

    fn plan(columns: &str) -> TablePlan {
        let text = format!(
            "[target]\nurl = \"postgresql://postgres@127.0.0.1:5432/test\"\n\
             [[tables]]\nname = \"t\"\nprimary_key = [\"id\"]\nsource = {{ export = \"x\" }}\n\
             [tables.columns]\n{columns}"
        );
        let config = crate::config::Config::parse(
            &text,
            std::path::Path::new("pipeline.toml"),
            std::path::Path::new("/base"),
            None,
        )
        .expect("config");
        TablePlan::new(&config.tables[0])
    }

    fn strings(page: &DecodedPage, col: usize) -> Vec<Option<String>> {
        let a = page
            .batch
            .column(col)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("a text column");
        (0..a.len())
            .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
            .collect()
    }

    /// Each item's attributes land in their columns whatever their order; a repeated name
    /// gives its last value; one attribute can feed two columns; the unmapped ones go to
    /// the rest column in the order written; and nothing of an item stays for the next.
    #[test]
    fn attributes_land_in_their_columns() {
        let plan = plan(
            "id = { from = \"k\", type = \"text\" }\n\
             a = { from = \"x\", type = \"text\" }\n\
             j = { from = \"x\", type = \"jsonb\" }\n\
             m = { from = \"m\", type = \"jsonb\" }\n\
             rest = { rest = true, type = \"jsonb\" }\n",
        );
        let lines = concat!(
            r#"{"Item":{"z":{"N":"1"},"x":{"S":"one"},"k":{"S":"r1"},"m":{"M":{"q":{"L":[{"N":"2"}]}}},"y":{"L":[{"S":"a"}]}}}"#,
            "\n",
            r#"{"Item":{"k":{"S":"r2"},"x":{"S":"first"},"x":{"S":"last"}}}"#,
            "\n",
            r#"{"Item":{"m":{"S":"not a map"},"k":{"S":"r3"}}}"#,
            "\n",
        );
        let page = decode_lines(&plan, lines.as_bytes(), 1).expect("decode");
        assert!(page.rejects.is_empty(), "{:?}", page.rejects);
        let s = |v: &[Option<&str>]| v.iter().map(|o| o.map(String::from)).collect::<Vec<_>>();
        assert_eq!(strings(&page, 0), s(&[Some("r1"), Some("r2"), Some("r3")]));
        assert_eq!(strings(&page, 1), s(&[Some("one"), Some("last"), None]));
        assert_eq!(
            strings(&page, 2),
            s(&[Some("\"one\""), Some("\"last\""), None])
        );
        assert_eq!(
            strings(&page, 3),
            s(&[Some(r#"{"q":[2]}"#), None, Some("\"not a map\"")])
        );
        assert_eq!(
            strings(&page, 4),
            s(&[Some(r#"{"z":1,"y":["a"]}"#), Some("{}"), Some("{}")])
        );
    }

    fn entry(name: &str) -> AttrEntry {
        AttrEntry {
            name: name.to_string(),
            plain: None,
            also_rest: false,
        }
    }

    /// Every name of the table is found as itself and no other name is, whatever its
    /// length: the short-name keys are exact and the long ones fall back to a compare.
    #[test]
    fn attr_index_finds_exactly_its_names() {
        let mut names: Vec<String> = (0..=40).map(|n| "a".repeat(n)).collect();
        // Names that differ only in their middle, past the two words of a long name.
        names.push(format!("{}x{}", "p".repeat(10), "q".repeat(10)));
        names.push(format!("{}y{}", "p".repeat(10), "q".repeat(10)));
        names.extend(
            [
                "é", "ab", "ba", "abc", "acb", "userId", "orderId", "giftWrap",
            ]
            .map(String::from),
        );
        let index = AttrIndex::new(names.iter().map(|n| entry(n)).collect());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(index.find(n), Some(i as u32), "{n:?}");
        }
        let others = [
            format!("{}z{}", "p".repeat(10), "q".repeat(10)),
            "b".into(),
            "bb".into(),
            "cba".into(),
            "userid".into(),
            "orderID".into(),
            "giftwrap".into(),
            "a".repeat(41),
            "e".into(),
        ];
        for n in &others {
            assert_eq!(index.find(n), None, "{n:?}");
        }
    }
}
