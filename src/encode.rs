//! Arrow `RecordBatch` → PostgreSQL binary COPY tuples.
//!
//! Input: a batch whose columns follow the table's [`ColumnType`]s. Output: the bytes of
//! its tuples (no file header or trailer: the writer adds those once per COPY stream).
//! Each column's array is downcast once per batch; the row loop only copies bytes.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{
    Array, BinaryArray, FixedSizeBinaryArray, ListArray, PrimitiveArray, RecordBatch, StringArray,
};

use crate::scalar::number;
use crate::schema::{ColumnType, ElemType};

/// The binary COPY file header: signature, flags, header-extension length.
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The binary COPY trailer: a tuple field count of -1.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// Why a batch cannot be encoded (a mismatch between batch and table: a bug, not input).
#[derive(Debug, thiserror::Error)]
#[error("column {column}: expected an Arrow array for {ty}, got {got}")]
pub struct EncodeError {
    pub column: usize,
    pub ty: ColumnType,
    pub got: String,
}

enum Col<'a> {
    Text(&'a StringArray),
    Jsonb(&'a StringArray),
    Numeric(&'a StringArray),
    Uuid(&'a FixedSizeBinaryArray),
    I16(&'a PrimitiveArray<Int16Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I64(&'a PrimitiveArray<Int64Type>),
    F32(&'a PrimitiveArray<Float32Type>),
    F64(&'a PrimitiveArray<Float64Type>),
    Bool(&'a arrow_array::BooleanArray),
    Date(&'a PrimitiveArray<Date32Type>),
    Ts(&'a PrimitiveArray<TimestampMicrosecondType>),
    Bin(&'a BinaryArray),
    /// An array column: the list, and its elements (all rows') downcast once.
    List(&'a ListArray, Box<Col<'a>>, ElemType),
}

/// Whether element `i` of an array column's elements is NULL.
fn elem_is_null(c: &Col<'_>, i: usize) -> bool {
    match c {
        Col::Text(a) | Col::Jsonb(a) | Col::Numeric(a) => a.is_null(i),
        Col::I32(a) => a.is_null(i),
        Col::I64(a) => a.is_null(i),
        Col::Bin(a) => a.is_null(i),
        // Elements are scalars (see `downcast`): nothing else is ever built.
        _ => false,
    }
}

fn downcast<'a>(i: usize, ty: ColumnType, a: &'a dyn Array) -> Result<Col<'a>, EncodeError> {
    let err = || EncodeError {
        column: i,
        ty,
        got: a.data_type().to_string(),
    };
    Ok(match ty {
        ColumnType::Text | ColumnType::Varchar(_) | ColumnType::Json => {
            Col::Text(a.as_string_opt().ok_or_else(err)?)
        }
        ColumnType::Jsonb => Col::Jsonb(a.as_string_opt().ok_or_else(err)?),
        ColumnType::Numeric(_) => Col::Numeric(a.as_string_opt().ok_or_else(err)?),
        ColumnType::Uuid => Col::Uuid(a.as_fixed_size_binary_opt().ok_or_else(err)?),
        ColumnType::Int2 => Col::I16(a.as_primitive_opt().ok_or_else(err)?),
        ColumnType::Int4 => Col::I32(a.as_primitive_opt().ok_or_else(err)?),
        ColumnType::Int8 => Col::I64(a.as_primitive_opt().ok_or_else(err)?),
        ColumnType::Float4 => Col::F32(a.as_primitive_opt().ok_or_else(err)?),
        ColumnType::Float8 => Col::F64(a.as_primitive_opt().ok_or_else(err)?),
        ColumnType::Bool => Col::Bool(a.as_boolean_opt().ok_or_else(err)?),
        ColumnType::Date => Col::Date(a.as_primitive_opt().ok_or_else(err)?),
        ColumnType::Timestamp | ColumnType::Timestamptz => {
            Col::Ts(a.as_primitive_opt().ok_or_else(err)?)
        }
        ColumnType::Bytea => Col::Bin(a.as_binary_opt().ok_or_else(err)?),
        ColumnType::Array(e) => {
            let list = a.as_list_opt::<i32>().ok_or_else(err)?;
            let values = list.values().as_ref();
            let elems = match e {
                ElemType::Text => values.as_string_opt::<i32>().map(Col::Text),
                ElemType::Numeric => values.as_string_opt::<i32>().map(Col::Numeric),
                ElemType::Int4 => values.as_primitive_opt::<Int32Type>().map(Col::I32),
                ElemType::Int8 => values.as_primitive_opt::<Int64Type>().map(Col::I64),
                ElemType::Bytea => values.as_binary_opt::<i32>().map(Col::Bin),
            };
            let elems = elems.ok_or_else(|| EncodeError {
                column: i,
                ty,
                got: a.data_type().to_string(),
            })?;
            Col::List(list, Box::new(elems), e)
        }
    })
}

/// Encodes a batch's rows as binary COPY tuples appended to `out`.
///
/// # Errors
/// [`EncodeError`] when a column's array does not match its declared type.
pub fn encode_batch(
    batch: &RecordBatch,
    types: &[ColumnType],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let cols: Vec<Col<'_>> = types
        .iter()
        .enumerate()
        .map(|(i, &ty)| downcast(i, ty, batch.column(i).as_ref()))
        .collect::<Result<_, _>>()?;
    let rows = batch.num_rows();
    out.reserve(size_hint(batch, types.len()));
    let nfields = (types.len() as i16).to_be_bytes();
    for r in 0..rows {
        out.extend_from_slice(&nfields);
        for c in &cols {
            write_field(c, r, out);
        }
    }
    Ok(())
}

/// An estimate of the COPY bytes of a batch, to reserve once.
fn size_hint(batch: &RecordBatch, ncols: usize) -> usize {
    let data: usize = batch
        .columns()
        .iter()
        .map(|a| a.get_buffer_memory_size())
        .sum();
    data + batch.num_rows() * (2 + 4 * ncols)
}

#[inline]
fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as i32).to_be_bytes());
}

#[inline]
fn write_field(c: &Col<'_>, r: usize, out: &mut Vec<u8>) {
    macro_rules! fixed {
        ($arr:expr, $conv:expr) => {{
            if $arr.is_null(r) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                let bytes = $conv($arr.value(r));
                put_len(out, bytes.len());
                out.extend_from_slice(&bytes);
            }
        }};
    }
    match c {
        Col::Text(a) => {
            if a.is_null(r) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                let s = a.value(r).as_bytes();
                put_len(out, s.len());
                out.extend_from_slice(s);
            }
        }
        Col::Jsonb(a) => {
            if a.is_null(r) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                let s = a.value(r).as_bytes();
                put_len(out, s.len() + 1);
                // jsonb binary format version 1, then the JSON text.
                out.push(1);
                out.extend_from_slice(s);
            }
        }
        Col::Numeric(a) => {
            if a.is_null(r) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                write_numeric_field(a.value(r), out);
            }
        }
        Col::Uuid(a) => {
            if a.is_null(r) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                put_len(out, 16);
                out.extend_from_slice(a.value(r));
            }
        }
        Col::I16(a) => fixed!(a, |v: i16| v.to_be_bytes()),
        Col::I32(a) => fixed!(a, |v: i32| v.to_be_bytes()),
        Col::I64(a) => fixed!(a, |v: i64| v.to_be_bytes()),
        Col::F32(a) => fixed!(a, |v: f32| v.to_bits().to_be_bytes()),
        Col::F64(a) => fixed!(a, |v: f64| v.to_bits().to_be_bytes()),
        Col::Bool(a) => {
            if a.is_null(r) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                put_len(out, 1);
                out.push(u8::from(a.value(r)));
            }
        }
        Col::Date(a) => fixed!(a, |v: i32| (v - PG_EPOCH_DAYS).to_be_bytes()),
        Col::Ts(a) => fixed!(a, |v: i64| (v - PG_EPOCH_MICROS).to_be_bytes()),
        Col::Bin(a) => {
            if a.is_null(r) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                let s = a.value(r);
                put_len(out, s.len());
                out.extend_from_slice(s);
            }
        }
        Col::List(a, elems, elem) => {
            if a.is_null(r) {
                out.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                write_array_field(a, elems, r, *elem, out);
            }
        }
    }
}

fn write_numeric_field(plain: &str, out: &mut Vec<u8>) {
    let len_at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    number::write_pg_numeric(plain, out);
    let n = (out.len() - len_at - 4) as i32;
    out[len_at..len_at + 4].copy_from_slice(&n.to_be_bytes());
}

/// One-dimensional array: ndim, has-null flag, element OID, (size, lower bound), elements.
fn write_array_field(a: &ListArray, elems: &Col<'_>, r: usize, elem: ElemType, out: &mut Vec<u8>) {
    let offsets = a.value_offsets();
    let (start, end) = (offsets[r] as usize, offsets[r + 1] as usize);
    let n = end - start;
    let len_at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    let oid = elem.pg_type().oid();
    if n == 0 {
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&oid.to_be_bytes());
    } else {
        let has_null = (start..end).any(|i| elem_is_null(elems, i));
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&i32::from(has_null).to_be_bytes());
        out.extend_from_slice(&oid.to_be_bytes());
        out.extend_from_slice(&(n as i32).to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for i in start..end {
            write_field(elems, i, out);
        }
    }
    let total = (out.len() - len_at - 4) as i32;
    out[len_at..len_at + 4].copy_from_slice(&total.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{Int64Builder, ListBuilder};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    /// A list column whose elements are not what its declared array type needs is an
    /// error naming the column, never an array header with no elements after it.
    #[test]
    fn array_elements_of_the_wrong_type_are_an_error() {
        let mut b = ListBuilder::new(Int64Builder::new());
        b.values().append_value(7);
        b.append(true);
        let list = b.finish();
        let schema = Schema::new(vec![Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            true,
        )]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(list)]).expect("batch");
        let mut out = Vec::new();
        let ty = ColumnType::Array(ElemType::Int4);
        let e = encode_batch(&batch, &[ty], &mut out).expect_err("int8 elements for integer[]");
        assert_eq!(e.column, 0);
        assert!(out.is_empty(), "nothing written: {out:?}");
        let ok = encode_batch(&batch, &[ColumnType::Array(ElemType::Int8)], &mut out);
        assert!(ok.is_ok());
        // 2 (fields) + 4 (len) + 20 (header) + 4 + 8 (one int8 element).
        assert_eq!(out.len(), 38);
    }
}
