//! The embedded backend: one SQLite file per role, WAL mode, `synchronous=FULL`, with group
//! commit.
//!
//! Durability costs one fsync per commit. During a boot storm many requests write at once,
//! and one commit each would make the fsync the server's throughput limit (and most of its
//! kernel time). So concurrent requests share a transaction instead of weakening
//! `synchronous`: each request runs its statements inside the open transaction under its
//! own SAVEPOINT (a request that fails rolls back only its own part), then waits until the
//! transaction that holds its work has been COMMITted. Whoever finds no commit in flight
//! commits for everybody, after letting requests already queued on the connection join.
//! No answer leaves before the fsync of the commit holding its writes, exactly as with one
//! commit per request; only the number of fsyncs shrinks.
//!
//! Requests still run one at a time on one connection, and the open transaction holds
//! SQLite's write lock (`BEGIN IMMEDIATE`), so a request's reads and writes never interleave
//! with another's, in this process or another one sharing the file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::db::{Cell, Conn, Dialect, Row, Value};
use super::StoreError;

/// Migrations, applied in order; the index + 1 is the schema version (`user_version`).
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_policies.sql"),
    include_str!("../../migrations/0003_attempt_failures.sql"),
    include_str!("../../migrations/0004_purge_indexes.sql"),
    include_str!("../../migrations/0005_session_nks.sql"),
    include_str!("../../migrations/0006_stateless_challenges.sql"),
    include_str!("../../migrations/0007_audit.sql"),
    include_str!("../../migrations/0008_webhook_cursor.sql"),
    include_str!("../../migrations/0009_pending_changes.sql"),
    include_str!("../../migrations/0010_auto_enroll.sql"),
    include_str!("../../migrations/0011_iak_bindings.sql"),
    include_str!("../../migrations/0012_tee_enrollments.sql"),
    include_str!("../../migrations/0013_boot_usage.sql"),
    include_str!("../../migrations/0014_test_challenge_round.sql"),
    include_str!("../../migrations/0015_pending_decided_by.sql"),
];

/// How long a committer waits for requests already queued on the connection to join its
/// transaction. Short against an fsync, long enough for a queued request's statements.
const JOIN_WAIT: Duration = Duration::from_millis(2);

/// Idle reader connections kept open (more are opened under load, then closed).
const READERS_KEPT: usize = 64;

/// Prepared statements kept per connection (the role's statements all fit).
const STATEMENT_CACHE: usize = 64;

/// A role's SQLite database.
#[derive(Debug)]
pub(crate) struct SqliteDb {
    /// The database file; `None` in memory (reads then share the writer's connection).
    path: Option<PathBuf>,
    /// Idle read-only connections.
    readers: Mutex<Vec<Connection>>,
    state: Mutex<State>,
    /// Signalled when a transaction ends (committed or failed) or a request joined one.
    changed: Condvar,
    /// Requests waiting for the connection (the committer waits for them to join).
    queued: AtomicUsize,
    /// Requests run inside a group transaction (metrics; atomics so a scrape never waits
    /// behind an fsync).
    requests: AtomicU64,
    /// COMMITs that made them durable.
    commits: AtomicU64,
}

#[derive(Debug)]
struct State {
    conn: Connection,
    /// The open group transaction, if any.
    open: Option<Arc<Txn>>,
    /// A request is committing `open` (or waiting for joiners before it commits).
    committing: bool,
}

/// One group transaction. Its members hold it and learn its outcome from it, so an
/// outcome can never be credited to another transaction.
#[derive(Debug)]
struct Txn {
    /// Successful members (their work is in the transaction).
    members: AtomicU64,
    /// `None` while open; `Some(true)` committed, `Some(false)` rolled back.
    outcome: Mutex<Option<bool>>,
}

impl Txn {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            members: AtomicU64::new(0),
            outcome: Mutex::new(None),
        })
    }

    fn outcome(&self) -> Option<bool> {
        self.outcome.lock().map_or(Some(false), |o| *o)
    }

    fn end(&self, committed: bool) {
        if let Ok(mut o) = self.outcome.lock() {
            *o = Some(committed);
        }
    }
}

/// How well group commit works (exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GroupStats {
    /// Requests that ran inside a group transaction.
    pub(crate) requests: u64,
    /// COMMITs (fsyncs) that made them durable.
    pub(crate) commits: u64,
}

impl SqliteDb {
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        Self::init(Connection::open(path)?, Some(path.to_path_buf()))
    }

    pub(crate) fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&mut conn)?;
        Ok(Self {
            path,
            readers: Mutex::new(Vec::new()),
            state: Mutex::new(State {
                conn,
                open: None,
                committing: false,
            }),
            changed: Condvar::new(),
            queued: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        })
    }

    /// Runs `f`, which only reads, on a reader connection in a read transaction of its own:
    /// one consistent snapshot of committed data (WAL readers never see the open group
    /// transaction), without taking the writer's turn or waiting for its commit.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(path) = &self.path else {
            // In memory there is only the one connection.
            return self.write(f);
        };
        let pooled = self.readers.lock().map_err(|_| StoreError::Poisoned)?.pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open_reader(path)?,
        };
        let out = {
            let tx = conn.transaction()?;
            let out = f(&mut SqliteConn(&tx));
            // A read transaction commits nothing; ending it releases the snapshot.
            tx.finish()?;
            out
        };
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < READERS_KEPT {
                pool.push(conn);
            }
        }
        out
    }

    /// Runs `f` atomically (all of it or none) in the group transaction and returns once
    /// that transaction is committed (on disk).
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let locked = self.state.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let mut g = locked.map_err(|_| StoreError::Poisoned)?;
        let txn = match &g.open {
            Some(txn) => txn.clone(),
            None => {
                exec(&g.conn, "BEGIN IMMEDIATE")?;
                let txn = Txn::new();
                g.open = Some(txn.clone());
                txn
            }
        };
        let (out, broken) = match run_in_savepoint(&mut g.conn, f) {
            Ok(out) => (Ok(out), false),
            Err(Step::Refused(e)) => (Err(e), false),
            Err(Step::Broken(e)) => {
                // Its partial writes could not be undone on their own: the whole group
                // transaction goes, and every member must hear so.
                tracing::error!(error = %e, "rolling back a group transaction");
                (Err(e), true)
            }
        };
        let members = txn.members.load(Ordering::SeqCst);
        let empty = out.is_err() && members == 0 && !g.committing;
        if broken || empty || g.conn.is_autocommit() {
            // The transaction must end now: broken, or rolled back by SQLite itself (after
            // an I/O error or a full disk), or holding nobody's work (ending it releases
            // SQLite's write lock for other processes instead of keeping it until the next
            // write comes).
            if !g.conn.is_autocommit() {
                if let Err(e) = exec(&g.conn, "ROLLBACK") {
                    tracing::error!(error = %e, "ROLLBACK of a group transaction failed");
                }
            }
            g.open = None;
            txn.end(false);
            self.changed.notify_all();
            return Err(out.err().unwrap_or(StoreError::GroupCommitFailed));
        }
        let out = out?;
        txn.members.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_all();
        loop {
            match txn.outcome() {
                Some(true) => return Ok(out),
                Some(false) => return Err(StoreError::GroupCommitFailed),
                None => {}
            }
            let ours = g.open.as_ref().is_some_and(|o| Arc::ptr_eq(o, &txn));
            if !g.committing && ours {
                g = self.commit(g, &txn)?;
            } else {
                g = self.changed.wait(g).map_err(|_| StoreError::Poisoned)?;
            }
        }
    }

    /// Commits the open transaction `txn` for all its members, after giving requests queued
    /// on the connection a moment to join.
    fn commit<'a>(
        &'a self,
        mut g: MutexGuard<'a, State>,
        txn: &Arc<Txn>,
    ) -> Result<MutexGuard<'a, State>, StoreError> {
        g.committing = true;
        let deadline = Instant::now() + JOIN_WAIT;
        while self.queued.load(Ordering::SeqCst) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = self
                .changed
                .wait_timeout(g, left)
                .map_err(|_| StoreError::Poisoned)?
                .0;
        }
        g.committing = false;
        if !g.open.as_ref().is_some_and(|o| Arc::ptr_eq(o, txn)) {
            // While we waited a joiner broke the transaction (it ended it, failed); a
            // transaction opened since belongs to its own members.
            self.changed.notify_all();
            return Ok(g);
        }
        let committed = exec(&g.conn, "COMMIT");
        if committed.is_err() && !g.conn.is_autocommit() {
            // Leave no half-open transaction behind for the next request.
            let _ = g.conn.execute_batch("ROLLBACK");
        }
        g.open = None;
        match committed {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                txn.end(true);
            }
            Err(ref e) => {
                tracing::error!(
                    error = %e,
                    members = txn.members.load(Ordering::SeqCst),
                    "group commit failed; its requests get an error"
                );
                txn.end(false);
            }
        }
        self.changed.notify_all();
        Ok(g)
    }

    /// Group-commit figures so far.
    pub(crate) fn stats(&self) -> GroupStats {
        GroupStats {
            requests: self.requests.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
        }
    }
}

/// A read-only connection to the database file (WAL: it reads while the writer writes).
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// How a request's savepoint ended when it did not succeed.
enum Step {
    /// `f` failed and its writes were rolled back; the group transaction is intact.
    Refused(StoreError),
    /// The savepoint could not be opened, released or rolled back: the group transaction
    /// can no longer be trusted to hold exactly its members' work.
    Broken(StoreError),
}

/// Runs `f` under a SAVEPOINT: released when `f` succeeds, rolled back when it fails, so a
/// failing request leaves no trace in the shared transaction.
fn run_in_savepoint<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
) -> Result<T, Step> {
    let broken = |e: rusqlite::Error| Step::Broken(e.into());
    exec(conn, "SAVEPOINT request").map_err(broken)?;
    match f(&mut SqliteConn(conn)) {
        Ok(v) => match exec(conn, "RELEASE request") {
            Ok(()) => Ok(v),
            Err(e) => Err(broken(e)),
        },
        Err(e) => {
            match exec(conn, "ROLLBACK TO request").and_then(|()| exec(conn, "RELEASE request")) {
                Ok(()) => Err(Step::Refused(e)),
                Err(rollback) => Err(broken(rollback)),
            }
        }
    }
}

/// Runs one of the few fixed control statements, prepared once per connection (they run
/// several times per request, and parsing them each time showed in profiles).
fn exec(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
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
