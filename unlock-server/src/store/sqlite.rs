//! The embedded backend: one SQLite file per role, WAL mode, `synchronous=FULL`.
//!
//! One connection behind a mutex; every write is a `BEGIN IMMEDIATE` transaction, so SQLite
//! admits one writer at a time across threads and processes sharing the file, and each
//! commit is on disk before it returns.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, TransactionBehavior};

use super::db::{Cell, Conn, Dialect, Row, Value};
use super::StoreError;

/// Migrations, applied in order; the index + 1 is the schema version (`user_version`).
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_policies.sql"),
    include_str!("../../migrations/0003_attempt_failures.sql"),
];

/// A role's SQLite database.
#[derive(Debug)]
pub(crate) struct SqliteDb {
    conn: Mutex<Connection>,
}

impl SqliteDb {
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(Connection::open(path)?)
    }

    pub(crate) fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Runs `f` outside a transaction (reads, single statements).
    pub(crate) fn run<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut SqliteConn(&conn))
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed when `f` succeeds.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&mut SqliteConn(&tx))?;
        tx.commit()?;
        Ok(out)
    }
}

struct SqliteConn<'a>(&'a Connection);

fn bind<'a>(v: &Value<'a>) -> rusqlite::types::ToSqlOutput<'a> {
    use rusqlite::types::ToSqlOutput::Borrowed;
    match *v {
        Value::Int(Some(i)) => Borrowed(ValueRef::Integer(i)),
        Value::Text(Some(s)) => Borrowed(ValueRef::Text(s.as_bytes())),
        Value::Blob(Some(b)) => Borrowed(ValueRef::Blob(b)),
        Value::Int(None) | Value::Text(None) | Value::Blob(None) => Borrowed(ValueRef::Null),
    }
}

impl Conn for SqliteConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let bound: Vec<_> = params.iter().map(bind).collect();
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(bound.iter()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut cells = Vec::with_capacity(n);
            for i in 0..n {
                cells.push(match row.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
                    ValueRef::Real(_) => {
                        return Err(StoreError::Corrupt {
                            table: "(query)",
                            what: "a REAL value where none is written",
                        })
                    }
                });
            }
            out.push(Row(cells));
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let bound: Vec<_> = params.iter().map(bind).collect();
        let n = stmt.execute(rusqlite::params_from_iter(bound.iter()))?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

/// Whether `e` is a uniqueness (primary key) violation.
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}
