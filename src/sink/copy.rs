//! Binary `COPY … FROM STDIN` streams: the file header, encoded tuples sent in small
//! writes (tens of KiB, so the server never waits on one large write), the trailer, and
//! the server's row count checked against what was sent.
//!
//! Input: COPY tuple bytes from encode. Output: rows in the target table (or the upsert
//! staging table), inside the caller's transaction: a chunk commits with its checkpoint.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, CopyInSink};

use super::{qualified, UPSERT_STAGE};
use crate::config::TableSpec;
use crate::encode::{COPY_HEADER, COPY_TRAILER};
use crate::error::{Error, Result};
use crate::schema::quote_ident;

/// One COPY stream on one connection, inside that connection's transaction.
pub struct CopyStream {
    sink: Pin<Box<CopyInSink<Bytes>>>,
    rows: u64,
    write_bytes: usize,
    table: String,
}

impl CopyStream {
    /// Starts `COPY … FROM STDIN (FORMAT binary)` and sends the file header.
    ///
    /// # Errors
    /// The server refuses the COPY.
    pub async fn start(
        client: &Client,
        schema: &str,
        spec: &TableSpec,
        write_bytes: usize,
        into_stage: bool,
    ) -> Result<CopyStream> {
        let target = if into_stage {
            quote_ident(UPSERT_STAGE)
        } else {
            qualified(schema, &spec.name)
        };
        Self::start_into(client, schema, spec, write_bytes, target).await
    }

    /// Starts a COPY of `spec`'s columns into `target` (an SQL name, quoted).
    ///
    /// # Errors
    /// The server refuses the COPY.
    pub async fn start_into(
        client: &Client,
        schema: &str,
        spec: &TableSpec,
        write_bytes: usize,
        target: String,
    ) -> Result<CopyStream> {
        let name = format!("{schema}.{}", spec.name);
        let cols: Vec<String> = spec.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "COPY {target} ({}) FROM STDIN (FORMAT binary)",
            cols.join(", ")
        );
        let sink = client
            .copy_in::<_, Bytes>(&sql)
            .await
            .map_err(|e| Error::pg(&name, "start COPY", &e))?;
        let mut s = CopyStream {
            sink: Box::pin(sink),
            rows: 0,
            write_bytes,
            table: name,
        };
        s.send(Bytes::from_static(COPY_HEADER)).await?;
        Ok(s)
    }

    async fn send(&mut self, b: Bytes) -> Result<()> {
        let table = &self.table;
        self.sink
            .send(b)
            .await
            .map_err(|e| Error::pg(table, "COPY", &e))
    }

    /// Sends encoded tuples in writes of `write_bytes`.
    ///
    /// # Errors
    /// The connection or the server fails.
    pub async fn write(&mut self, mut tuples: Bytes, rows: u64) -> Result<()> {
        while !tuples.is_empty() {
            let n = tuples.len().min(self.write_bytes);
            let piece = tuples.split_to(n);
            self.send(piece).await?;
        }
        self.rows += rows;
        Ok(())
    }

    /// Sends the trailer, finishes the COPY and checks the server's row count.
    ///
    /// # Errors
    /// The server rejects the data, or its count differs from what was sent.
    pub async fn finish(mut self) -> Result<u64> {
        self.send(Bytes::from_static(COPY_TRAILER)).await?;
        let table = self.table.clone();
        let n = self
            .sink
            .as_mut()
            .finish()
            .await
            .map_err(|e| Error::pg(&table, "finish COPY", &e))?;
        if n != self.rows {
            return Err(Error::Postgres {
                table,
                action: "finish COPY".into(),
                reason: format!("the server counted {n} rows, {} were sent", self.rows),
            });
        }
        Ok(n)
    }
}
