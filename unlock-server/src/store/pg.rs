//! The fleet backend: PostgreSQL shared by any number of `unlock-server` replicas.
//!
//! Each role lives in its own schema (`verifier`, `tenant`), set as the connection's
//! `search_path`, so the roles' tables never mix even in one database; a split-trust
//! deployment gives each role process its own database and credentials.
//!
//! Transactions run at READ COMMITTED. A decision that must not interleave with another
//! replica's (the release above all) first locks the agent's enrollment row
//! (`SELECT ... FOR UPDATE`): every later statement of the transaction then sees whatever the
//! previous holder committed, so the checks and the writes behave as if the agent's
//! decisions ran one after another, on any number of replicas. Commits are durable
//! (`synchronous_commit` on, the server's default) before they return; PostgreSQL's own
//! group commit batches the fsyncs of concurrent releases.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, NoTls, Statement};

use super::db::{Cell, Conn, Dialect, Row, Value};
use super::StoreError;

/// Migrations, the same versions as SQLite's, in PostgreSQL's dialect.
pub(crate) const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_policies.sql"),
    include_str!("../../migrations/postgres/0003_attempt_failures.sql"),
    include_str!("../../migrations/postgres/0004_purge_indexes.sql"),
    include_str!("../../migrations/postgres/0005_session_nks.sql"),
    include_str!("../../migrations/postgres/0006_stateless_challenges.sql"),
    include_str!("../../migrations/postgres/0007_audit.sql"),
    include_str!("../../migrations/postgres/0008_webhook_cursor.sql"),
    include_str!("../../migrations/postgres/0009_pending_changes.sql"),
    include_str!("../../migrations/postgres/0010_auto_enroll.sql"),
    include_str!("../../migrations/postgres/0011_iak_bindings.sql"),
    include_str!("../../migrations/postgres/0012_tee_enrollments.sql"),
    include_str!("../../migrations/postgres/0013_boot_usage.sql"),
    include_str!("../../migrations/postgres/0014_test_challenge_round.sql"),
    include_str!("../../migrations/postgres/0015_pending_decided_by.sql"),
];

/// Key of the advisory lock that serializes migrations of replicas starting together.
const MIGRATION_LOCK: i64 = 0x756e_6c6f_636b;

/// Connections each store keeps at most (per role, per replica).
const MAX_CONNECTIONS: usize = 16;

/// How long a request waits for a free connection before failing.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(15);

struct Pooled {
    client: Client,
    statements: HashMap<String, Statement>,
}

struct PoolState {
    idle: Vec<Pooled>,
    open: usize,
}

/// A role's schema in a PostgreSQL database, with a small connection pool.
pub(crate) struct PgDb {
    config: postgres::Config,
    schema: String,
    state: Mutex<PoolState>,
    freed: Condvar,
}

impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only the schema is shown.
        f.debug_struct("PgDb")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PgDb {
    /// Connects to `url` and migrates schema `schema` (created if needed).
    pub(crate) fn open(url: &str, schema: &str) -> Result<Self, StoreError> {
        if schema.is_empty()
            || !schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
        {
            return Err(StoreError::Config("schema names are [a-z0-9_]+"));
        }
        let mut config: postgres::Config = url.parse().map_err(StoreError::Postgres)?;
        config.options(&format!("-c search_path={schema}"));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let db = Self {
            config,
            schema: schema.to_owned(),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.checkout()?;
        let r = (|| {
            let mut tx = c.client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {0};
                 CREATE TABLE IF NOT EXISTS {0}.schema_migrations (version BIGINT PRIMARY KEY)",
                self.schema
            ))?;
            let version: i64 = tx
                .query_one(
                    &format!(
                        "SELECT COALESCE(MAX(version), 0) FROM {}.schema_migrations",
                        self.schema
                    ),
                    &[],
                )?
                .try_get(0)?;
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
                tx.batch_execute(sql)?;
                let v = i64::try_from(i + 1).unwrap_or(i64::MAX);
                tx.execute(
                    &format!(
                        "INSERT INTO {}.schema_migrations (version) VALUES ($1)",
                        self.schema
                    ),
                    &[&v],
                )?;
            }
            tx.commit()?;
            Ok(())
        })();
        self.checkin(c);
        r
    }

    fn checkout(&self) -> Result<Pooled, StoreError> {
        let mut st = self.state.lock().map_err(|_| StoreError::Poisoned)?;
        loop {
            if let Some(c) = st.idle.pop() {
                return Ok(c);
            }
            if st.open < MAX_CONNECTIONS {
                st.open += 1;
                drop(st);
                return match self.config.connect(NoTls) {
                    Ok(client) => Ok(Pooled {
                        client,
                        statements: HashMap::new(),
                    }),
                    Err(e) => {
                        if let Ok(mut st) = self.state.lock() {
                            st.open = st.open.saturating_sub(1);
                        }
                        self.freed.notify_one();
                        Err(e.into())
                    }
                };
            }
            let (guard, timeout) = self
                .freed
                .wait_timeout(st, CHECKOUT_TIMEOUT)
                .map_err(|_| StoreError::Poisoned)?;
            st = guard;
            if timeout.timed_out() && st.idle.is_empty() && st.open >= MAX_CONNECTIONS {
                return Err(StoreError::PoolExhausted);
            }
        }
    }

    /// Returns a connection; a broken one (the server restarted) is dropped, so the next
    /// request connects afresh.
    fn checkin(&self, c: Pooled) {
        if let Ok(mut st) = self.state.lock() {
            if c.client.is_closed() {
                st.open = st.open.saturating_sub(1);
            } else {
                st.idle.push(c);
            }
        }
        self.freed.notify_one();
    }

    /// Runs `f` on a pooled connection outside a transaction.
    pub(crate) fn run<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.checkout()?;
        let Pooled { client, statements } = &mut c;
        let r = f(&mut PgConn { client, statements });
        self.checkin(c);
        r
    }

    /// Runs `f` in one READ COMMITTED transaction, committed when `f` succeeds.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.checkout()?;
        let r = (|| {
            let Pooled { client, statements } = &mut c;
            let mut tx = client.transaction()?;
            let out = f(&mut PgConn {
                client: &mut tx,
                statements,
            })?;
            tx.commit()?;
            Ok(out)
        })();
        if r.is_err() {
            // A statement prepared inside a rolled-back transaction is still valid, but a
            // connection in an unknown state is not worth keeping.
            c.statements.clear();
        }
        self.checkin(c);
        r
    }
}

struct PgConn<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
}

/// `?1` → `$1` (our statements have no `?` elsewhere).
fn to_pg(sql: &str) -> String {
    sql.replace('?', "$")
}

impl<C: GenericClient> PgConn<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&to_pg(sql))?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

fn bind<'a>(v: &'a Value<'a>) -> &'a (dyn ToSql + Sync) {
    match v {
        Value::Int(x) => x,
        Value::Text(x) => x,
        Value::Blob(x) => x,
    }
}

fn cell(row: &postgres::Row, i: usize, ty: &Type) -> Result<Cell, StoreError> {
    let c = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?.map(Cell::Int)
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?
            .map(|v| Cell::Int(i64::from(v)))
    } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
        row.try_get::<_, Option<String>>(i)?.map(Cell::Text)
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)?.map(Cell::Blob)
    } else {
        return Err(StoreError::Corrupt {
            table: "(query)",
            what: "a column type this program does not write",
        });
    };
    Ok(c.unwrap_or(Cell::Null))
}

impl<C: GenericClient> Conn for PgConn<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn query(&mut self, sql: &str, params: &[Value<'_>]) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql)?;
        let bound: Vec<&(dyn ToSql + Sync)> = params.iter().map(bind).collect();
        let rows = self.client.query(&stmt, &bound)?;
        let types: Vec<Type> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        rows.iter()
            .map(|r| {
                types
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| cell(r, i, ty))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
            })
            .collect()
    }

    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let stmt = self.statement(sql)?;
        let bound: Vec<&(dyn ToSql + Sync)> = params.iter().map(bind).collect();
        Ok(self.client.execute(&stmt, &bound)?)
    }
}

/// Whether `e` is a uniqueness (primary key) violation.
pub(crate) fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
}
