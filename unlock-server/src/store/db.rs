//! The small SQL surface both backends offer, so that every decision (the release above all)
//! is written once and runs unchanged on SQLite and PostgreSQL.
//!
//! Statements use SQLite's numbered parameters (`?1`); the PostgreSQL backend rewrites them
//! to `$1`. Values are 64-bit integers, text or bytes (possibly NULL); every integer column
//! is `BIGINT` in PostgreSQL so one Rust type reads both.

use super::StoreError;

/// Where a statement runs; the few places that differ ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// One writer at a time (`BEGIN IMMEDIATE`): no row locks needed or available.
    Sqlite,
    /// Many writers (replicas), READ COMMITTED: decisions take row locks.
    Postgres,
}

impl Dialect {
    /// The row-lock clause for a `SELECT` whose rows the transaction will decide on.
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE",
        }
    }

    /// The clause for a `SELECT` picking rows a background job (the purge) will delete:
    /// rows another transaction holds are skipped rather than waited for, so the job never
    /// queues behind (or ahead of) a release, and two replicas purging at once neither wait
    /// for each other nor deadlock. SQLite needs none: its single writer already excludes
    /// everybody else for the statement.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    /// BIGINT / INTEGER.
    Int(Option<i64>),
    /// TEXT.
    Text(Option<&'a str>),
    /// BYTEA / BLOB.
    Blob(Option<&'a [u8]>),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Self::Int(Some(i64::from(v)))
    }
}

impl From<Option<u32>> for Value<'_> {
    fn from(v: Option<u32>) -> Self {
        Self::Int(v.map(i64::from))
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Self::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Self::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Self::Blob(Some(v))
    }
}

impl<'a> From<&'a Vec<u8>> for Value<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Self::Blob(Some(v))
    }
}

impl<'a> From<Option<&'a [u8]>> for Value<'a> {
    fn from(v: Option<&'a [u8]>) -> Self {
        Self::Blob(v)
    }
}

/// `[a.into(), b.into(), ...]` as a parameter list.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::db::Value::from($v)),*]
    };
}
pub(crate) use args;

/// One column of a result row, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// A result row. Accessors fail with `Corrupt` when a column is not what this program
/// wrote, rather than panicking.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row(pub(crate) Vec<Cell>);

fn wrong(table: &'static str) -> StoreError {
    StoreError::Corrupt {
        table,
        what: "column of an unexpected type",
    }
}

impl Row {
    fn cell(&self, i: usize) -> &Cell {
        self.0.get(i).unwrap_or(&Cell::Null)
    }

    /// An integer column (not NULL).
    pub(crate) fn int(&self, i: usize, table: &'static str) -> Result<i64, StoreError> {
        self.opt_int(i, table)?.ok_or_else(|| wrong(table))
    }

    /// A nullable integer column.
    pub(crate) fn opt_int(&self, i: usize, table: &'static str) -> Result<Option<i64>, StoreError> {
        match self.cell(i) {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            _ => Err(wrong(table)),
        }
    }

    /// A text column (not NULL).
    pub(crate) fn text(&self, i: usize, table: &'static str) -> Result<String, StoreError> {
        self.opt_text(i, table)?.ok_or_else(|| wrong(table))
    }

    /// A nullable text column.
    pub(crate) fn opt_text(
        &self,
        i: usize,
        table: &'static str,
    ) -> Result<Option<String>, StoreError> {
        match self.cell(i) {
            Cell::Null => Ok(None),
            Cell::Text(v) => Ok(Some(v.clone())),
            _ => Err(wrong(table)),
        }
    }

    /// A bytes column (not NULL).
    pub(crate) fn blob(&self, i: usize, table: &'static str) -> Result<Vec<u8>, StoreError> {
        self.opt_blob(i, table)?.ok_or_else(|| wrong(table))
    }

    /// A nullable bytes column.
    pub(crate) fn opt_blob(
        &self,
        i: usize,
        table: &'static str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.cell(i) {
            Cell::Null => Ok(None),
            Cell::Blob(v) => Ok(Some(v.clone())),
            _ => Err(wrong(table)),
        }
    }
}

/// A connection, or a transaction on one.
pub(crate) trait Conn {
    /// Which backend this is.
    fn dialect(&self) -> Dialect;

    /// Runs a query and returns every row.
    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, StoreError>;

    /// Runs a statement and returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError>;

    /// The first row of a query, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The one row of a query that always returns one (an aggregate).
    fn query_one(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Row, StoreError> {
        Ok(self.query_opt(sql, params)?.unwrap_or_default())
    }
}
