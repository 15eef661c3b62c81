//! Reading binary COPY: tuples out of a byte stream, whoever wrote it (our encoder, or
//! PostgreSQL's `COPY … TO STDOUT (FORMAT binary)`), fed in pieces of any size.
//!
//! Input: binary COPY bytes. Output: one tuple at a time, as field offsets into the
//! reader's buffer (`None` = SQL NULL).

use crate::encode::COPY_HEADER;

/// Incremental parser of a binary COPY stream.
#[derive(Default)]
pub struct TupleReader {
    buf: Vec<u8>,
    pos: usize,
    header_done: bool,
    /// Whether the stream begins with the file header (PostgreSQL's output does).
    expect_header: bool,
    pub finished: bool,
}

/// Field offsets of one tuple inside the reader's buffer (`None` = SQL NULL).
pub type Fields = Vec<Option<(usize, usize)>>;

impl TupleReader {
    /// A reader for a stream that starts with the binary COPY header.
    #[must_use]
    pub fn with_header() -> TupleReader {
        TupleReader {
            expect_header: true,
            ..TupleReader::default()
        }
    }

    /// A reader for bare tuples (our encoder's output).
    #[must_use]
    pub fn bare() -> TupleReader {
        TupleReader::default()
    }

    /// A reader over bare tuples already in one buffer (no copy).
    #[must_use]
    pub fn bare_from(buf: Vec<u8>) -> TupleReader {
        TupleReader {
            buf,
            ..TupleReader::default()
        }
    }

    /// Appends bytes from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > (1 << 20) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete tuple, calling `f` with the buffer and its fields.
    ///
    /// # Errors
    /// A malformed stream.
    pub fn next_tuple<R>(
        &mut self,
        fields: &mut Fields,
        f: impl FnOnce(&[u8], &Fields) -> R,
    ) -> Result<Option<R>, String> {
        if !self.header_done && self.expect_header {
            if self.buf.len() - self.pos < COPY_HEADER.len() {
                return Ok(None);
            }
            if self.buf[self.pos..self.pos + 11] != COPY_HEADER[..11] {
                return Err("not a binary COPY stream (bad signature)".into());
            }
            let ext = u32::from_be_bytes(read4(&self.buf, self.pos + 15)) as usize;
            if self.buf.len() - self.pos < 19 + ext {
                return Ok(None);
            }
            self.pos += 19 + ext;
            self.header_done = true;
        }
        if self.finished {
            return Ok(None);
        }
        let b = &self.buf;
        let mut p = self.pos;
        if b.len() < p + 2 {
            return Ok(None);
        }
        let n = i16::from_be_bytes([b[p], b[p + 1]]);
        if n == -1 {
            self.finished = true;
            self.pos = p + 2;
            return Ok(None);
        }
        if n < 0 {
            return Err(format!("bad field count {n}"));
        }
        p += 2;
        fields.clear();
        for _ in 0..n {
            if b.len() < p + 4 {
                return Ok(None);
            }
            let len = i32::from_be_bytes(read4(b, p));
            p += 4;
            if len < 0 {
                fields.push(None);
            } else {
                let len = len as usize;
                if b.len() < p + len {
                    return Ok(None);
                }
                fields.push(Some((p, p + len)));
                p += len;
            }
        }
        self.pos = p;
        Ok(Some(f(&self.buf, fields)))
    }
}

fn read4(b: &[u8], p: usize) -> [u8; 4] {
    [b[p], b[p + 1], b[p + 2], b[p + 3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_across_chunk_boundaries() {
        let mut stream = COPY_HEADER.to_vec();
        for i in 0..3u8 {
            stream.extend_from_slice(&2i16.to_be_bytes());
            stream.extend_from_slice(&1i32.to_be_bytes());
            stream.push(i);
            stream.extend_from_slice(&(-1i32).to_be_bytes());
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        let mut r = TupleReader::with_header();
        let mut fields = Fields::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(3) {
            r.push(chunk);
            while let Some(v) = r
                .next_tuple(&mut fields, |b, f| {
                    (f[0].map(|(s, e)| b[s..e].to_vec()), f[1].is_none())
                })
                .expect("parse")
            {
                got.push(v);
            }
        }
        assert!(r.finished);
        assert_eq!(
            got,
            vec![
                (Some(vec![0]), true),
                (Some(vec![1]), true),
                (Some(vec![2]), true)
            ]
        );
    }
}
