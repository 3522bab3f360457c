//! One SQL connection over either engine the store runs on: SQLite (embedded) or PostgreSQL
//! (a cluster). The store's modules write their SQL once, in SQLite's dialect, against this
//! module's [`Connection`], [`Transaction`], [`Statement`] and [`Row`], which mirror
//! rusqlite's so that both engines run the same code.
//!
//! Constraints:
//! 1. Parameters are rusqlite's [`ToSql`] values and rows are read with rusqlite's
//!    [`FromSql`], on both engines: a PostgreSQL column is read as the SQLite value it holds
//!    (integers, booleans and whole numerics as integers; text; bytes; floats).
//! 2. The SQL is translated for PostgreSQL once per statement and cached with its prepared
//!    statement ([`to_postgres`]): `?N` parameters, `INSERT OR IGNORE`, the DDL types. What it
//!    does not translate must be written portably (`RETURNING id`, not `last_insert_rowid()`;
//!    `GREATEST`/`LEAST`, which SQLite gets as the two-argument `MAX`/`MIN`).
//! 3. A write transaction ([`Connection::write_transaction`]) holds the engine's one write
//!    lock until it ends: SQLite's own (`BEGIN IMMEDIATE`), and on PostgreSQL a transaction
//!    advisory lock per schema, so every node of a cluster writes in turn, commits in the
//!    order its rows were numbered, and a read-then-write inside it sees no other writer.
//! 4. A transaction not committed is rolled back when dropped.
//! 5. PostgreSQL rows are read whole before they are mapped (the synchronous client cannot
//!    stream while the connection is shared); every query of the store has a limit.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use bytes::BytesMut;
use postgres::types::{IsNull, Type};
pub use rusqlite::params;
pub use rusqlite::types;
pub use rusqlite::types::{FromSql, ToSql, ToSqlOutput, ValueRef};
use thiserror::Error;

/// A failure of either engine, or of reading a value.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("{} in: {sql}", postgres_message(.source))]
    PostgresStatement {
        sql: String,
        source: postgres::Error,
    },
    #[error("the query returned no rows")]
    NoRows,
    #[error("column {column}: {message}")]
    Value { column: usize, message: String },
    #[error("{0}")]
    Unsupported(String),
    /// PostgreSQL's text cannot hold U+0000 (SQLite's can).
    #[error("text with a NUL character (U+0000) cannot be stored")]
    NulInText,
}

/// PostgreSQL's message with its detail: the client's own Display says only "db error".
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "postgres: {} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => format!("postgres: {e}"),
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        match e {
            rusqlite::Error::QueryReturnedNoRows => Error::NoRows,
            e => Error::Sqlite(e),
        }
    }
}

impl Error {
    /// A uniqueness or primary-key conflict (the row is already there).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            Error::Postgres(e) | Error::PostgresStatement { source: e, .. } => {
                e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `.optional()` on a single-row result, as rusqlite has it.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Statement parameters: rusqlite's `params![]`, `params_from_iter(…)`, `[]` and arrays.
pub trait Params {
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R;
}

impl Params for [&(dyn ToSql + Send + Sync); 0] {
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(&[])
    }
}

impl Params for &[&dyn ToSql] {
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        f(self)
    }
}

impl<T: ToSql, const N: usize> Params for &[T; N] {
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        let refs: Vec<&dyn ToSql> = self.iter().map(|v| v as &dyn ToSql).collect();
        f(&refs)
    }
}

macro_rules! array_params {
    ($($n:literal)+) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
                let refs: Vec<&dyn ToSql> = self.iter().map(|v| v as &dyn ToSql).collect();
                f(&refs)
            }
        }
    )+};
}
array_params!(1 2 3 4 5 6 7 8);

/// Parameters from an iterator of values (rusqlite's function of the same name).
pub struct ParamsFromIter<I>(I);

pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    ParamsFromIter(iter)
}

impl<I> Params for ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: ToSql,
{
    fn with<R>(self, f: impl FnOnce(&[&dyn ToSql]) -> R) -> R {
        let values: Vec<I::Item> = self.0.into_iter().collect();
        let refs: Vec<&dyn ToSql> = values.iter().map(|v| v as &dyn ToSql).collect();
        f(&refs)
    }
}

/// Which engine a connection speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A connection to either engine.
pub enum Connection {
    Sqlite(rusqlite::Connection),
    Postgres(Box<PgConnection>),
}

/// A PostgreSQL client with its prepared statements (keyed by the SQLite-dialect text).
pub struct PgConnection {
    /// `None` only while dropping (closing the session blocks too).
    client: RefCell<Option<postgres::Client>>,
    /// Set when a call failed because the session is gone (the client may not know yet).
    broken: std::cell::Cell<bool>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

/// Run `f`, which blocks on PostgreSQL, where blocking is allowed. The synchronous client
/// runs its own small runtime and panics inside another's worker thread; the store is
/// called from its own threads and `spawn_blocking` (where this runs `f` as is), but the
/// command line opens it from `main`'s runtime, whose worker this hands over first.
pub fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Prepared statements kept per PostgreSQL connection; past this the cache starts over
/// (the store has a few hundred distinct statements; filters make some of them vary).
const STATEMENT_CACHE: usize = 512;

impl PgConnection {
    pub fn new(client: postgres::Client) -> PgConnection {
        PgConnection {
            client: RefCell::new(Some(client)),
            broken: std::cell::Cell::new(false),
            statements: RefCell::new(HashMap::new()),
        }
    }

    fn prepare(&self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let translated = to_postgres(sql)?;
        let stmt = self
            .check(off_runtime(|| self.client().prepare(&translated)))
            .map_err(|source| Error::PostgresStatement {
                sql: translated,
                source,
            })?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        cache.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    fn query(
        &self,
        stmt: &postgres::Statement,
        params: &[&dyn ToSql],
    ) -> Result<Vec<postgres::Row>> {
        let values = pg_params(params)?;
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        Ok(self.check(off_runtime(|| self.client().query(stmt, &refs)))?)
    }

    fn execute(&self, stmt: &postgres::Statement, params: &[&dyn ToSql]) -> Result<usize> {
        let values = pg_params(params)?;
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        Ok(self.check(off_runtime(|| self.client().execute(stmt, &refs)))? as usize)
    }

    fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        std::cell::RefMut::map(self.client.borrow_mut(), |c| {
            c.as_mut().expect("present until dropped")
        })
    }

    /// Whether the server closed the session (it is not lent again; a writer is replaced).
    pub fn is_closed(&self) -> bool {
        self.broken.get() || self.client().is_closed()
    }

    /// Note an error that means the session is gone: the connection closed, an I/O error, or
    /// the server ending it (SQLSTATE classes 08 and 57P).
    fn check<T>(&self, r: Result<T, postgres::Error>) -> Result<T, postgres::Error> {
        if let Err(e) = &r {
            let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
            let code = e.code().map(|c| c.code()).unwrap_or("");
            if e.is_closed() || io || code.starts_with("08") || code.starts_with("57P") {
                self.broken.set(true);
            }
        }
        r
    }

    /// Run statements with no parameters, as written (no translation).
    pub fn batch_execute(&self, sql: &str) -> Result<()> {
        Ok(self.check(off_runtime(|| self.client().batch_execute(sql)))?)
    }
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        // The statements go first: each tells the server to close it as it drops.
        self.statements.get_mut().clear();
        if let Some(client) = self.client.get_mut().take() {
            off_runtime(|| drop(client));
        }
    }
}

impl Connection {
    pub fn engine(&self) -> Engine {
        match self {
            Connection::Sqlite(_) => Engine::Sqlite,
            Connection::Postgres(_) => Engine::Postgres,
        }
    }

    /// The SQLite connection underneath, for what only SQLite has (pragmas, query plans).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Connection::Sqlite(c) => Some(c),
            Connection::Postgres(_) => None,
        }
    }

    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// Run one or more statements without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Connection::Sqlite(c) => Ok(c.execute_batch(&to_sqlite(sql))?),
            Connection::Postgres(c) => c.batch_execute(&to_postgres(sql)?),
        }
    }

    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(match self {
            Connection::Sqlite(c) => Statement::Sqlite(c.prepare(&to_sqlite(sql))?),
            Connection::Postgres(c) => Statement::Postgres {
                conn: c,
                stmt: c.prepare(sql)?,
            },
        })
    }

    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(match self {
            Connection::Sqlite(c) => Statement::SqliteCached(c.prepare_cached(&to_sqlite(sql))?),
            Connection::Postgres(c) => Statement::Postgres {
                conn: c,
                stmt: c.prepare(sql)?,
            },
        })
    }

    /// Begin a transaction that reads first and may write later (SQLite: deferred).
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.begin("BEGIN", false)
    }

    /// Begin a transaction that holds the store's write lock from its first statement
    /// (constraint 3 of the module).
    pub fn write_transaction(&mut self) -> Result<Transaction<'_>> {
        self.begin("BEGIN IMMEDIATE", true)
    }

    fn begin(&mut self, sqlite_begin: &str, lock: bool) -> Result<Transaction<'_>> {
        match self {
            Connection::Sqlite(c) => c.execute_batch(sqlite_begin)?,
            Connection::Postgres(c) => {
                c.batch_execute("BEGIN")?;
                if lock {
                    let locked = c.batch_execute(WRITE_LOCK_SQL);
                    if let Err(e) = locked {
                        let _ = c.batch_execute("ROLLBACK");
                        return Err(e);
                    }
                }
            }
        }
        Ok(Transaction {
            conn: self,
            done: false,
        })
    }

    fn finish(&self, sql: &str) -> Result<()> {
        match self {
            Connection::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Connection::Postgres(c) => c.batch_execute(sql),
        }
    }
}

/// The write lock of a PostgreSQL store: one transaction-scoped advisory lock per schema, so
/// stores in different schemas of one database (tests) do not wait for each other.
const WRITE_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtext(current_schema()))";

/// A transaction; rolled back on drop unless committed.
pub struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl Transaction<'_> {
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.conn.finish("COMMIT")
    }

    pub fn rollback(mut self) -> Result<()> {
        self.done = true;
        self.conn.finish("ROLLBACK")
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.finish("ROLLBACK");
        }
    }
}

/// A prepared statement.
pub enum Statement<'c> {
    Sqlite(rusqlite::Statement<'c>),
    SqliteCached(rusqlite::CachedStatement<'c>),
    Postgres {
        conn: &'c PgConnection,
        stmt: postgres::Statement,
    },
}

/// The rows of a query, mapped.
pub type MappedRows<'s, T> = Box<dyn Iterator<Item = Result<T>> + 's>;

impl<'c> Statement<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match self {
            Statement::Sqlite(s) => Some(s),
            Statement::SqliteCached(s) => Some(s),
            Statement::Postgres { .. } => None,
        }
    }

    pub fn execute(&mut self, params: impl Params) -> Result<usize> {
        if let Statement::Postgres { conn, stmt } = self {
            return params.with(|p| conn.execute(stmt, p));
        }
        let s = self.sqlite().expect("not postgres");
        params.with(|p| Ok(s.execute(p)?))
    }

    pub fn query_map<'s, T: 's>(
        &'s mut self,
        params: impl Params,
        mut f: impl FnMut(&Row<'_>) -> Result<T> + 's,
    ) -> Result<MappedRows<'s, T>> {
        if let Statement::Postgres { conn, stmt } = self {
            let rows = params.with(|p| conn.query(stmt, p))?;
            return Ok(Box::new(
                rows.into_iter().map(move |r| f(&Row::Postgres(&r))),
            ));
        }
        let s = self.sqlite().expect("not postgres");
        let rows = params.with(|p| {
            // The parameters are bound before the rows are read.
            s.query_and_then(p, move |r| f(&Row::Sqlite(r)))
        })?;
        Ok(Box::new(rows))
    }

    pub fn query_row<T>(
        &mut self,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        if let Statement::Postgres { conn, stmt } = self {
            let rows = params.with(|p| conn.query(stmt, p))?;
            return match rows.first() {
                Some(r) => f(&Row::Postgres(r)),
                None => Err(Error::NoRows),
            };
        }
        let s = self.sqlite().expect("not postgres");
        params.with(|p| {
            let mut rows = s.query(p)?;
            match rows.next()? {
                Some(r) => f(&Row::Sqlite(r)),
                None => Err(Error::NoRows),
            }
        })
    }

    pub fn exists(&mut self, params: impl Params) -> Result<bool> {
        self.query_row(params, |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
    }

    /// The rows one at a time ([`Rows::next`]).
    pub fn query(&mut self, params: impl Params) -> Result<Rows<'_>> {
        if let Statement::Postgres { conn, stmt } = self {
            let rows = params.with(|p| conn.query(stmt, p))?;
            return Ok(Rows::Postgres(rows.into_iter(), None));
        }
        let s = self.sqlite().expect("not postgres");
        Ok(Rows::Sqlite(params.with(|p| s.query(p))?))
    }
}

/// Rows read one at a time.
pub enum Rows<'s> {
    Sqlite(rusqlite::Rows<'s>),
    Postgres(std::vec::IntoIter<postgres::Row>, Option<postgres::Row>),
}

impl Rows<'_> {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(r) => Ok(r.next()?.map(Row::Sqlite)),
            Rows::Postgres(rows, current) => {
                *current = rows.next();
                Ok(current.as_ref().map(Row::Postgres))
            }
        }
    }
}

/// One row of a result.
#[derive(Clone, Copy)]
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

/// A column's position (rusqlite also takes names; the store uses positions only).
pub trait ColumnIndex {
    fn index(&self) -> usize;
}

impl ColumnIndex for usize {
    fn index(&self) -> usize {
        *self
    }
}

impl Row<'_> {
    pub fn get<I: ColumnIndex, T: FromSql>(&self, idx: I) -> Result<T> {
        let i = idx.index();
        match self {
            Row::Sqlite(r) => Ok(r.get(i)?),
            Row::Postgres(r) => {
                let v: PgValue = r.try_get(i)?;
                T::column_result(v.as_ref()).map_err(|e| Error::Value {
                    column: i,
                    message: e.to_string(),
                })
            }
        }
    }
}

/// A PostgreSQL column read as the SQLite value it holds.
enum PgValue<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

impl PgValue<'_> {
    fn as_ref(&self) -> ValueRef<'_> {
        match self {
            PgValue::Null => ValueRef::Null,
            PgValue::Integer(i) => ValueRef::Integer(*i),
            PgValue::Real(f) => ValueRef::Real(*f),
            PgValue::Text(t) => ValueRef::Text(t),
            PgValue::Blob(b) => ValueRef::Blob(b),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl<'a> postgres::types::FromSql<'a> for PgValue<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<PgValue<'a>, BoxError> {
        Ok(match *ty {
            Type::INT8 => PgValue::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => PgValue::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => PgValue::Integer(i16::from_sql(ty, raw)?.into()),
            Type::OID => PgValue::Integer(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => PgValue::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => PgValue::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => PgValue::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => PgValue::Blob(raw),
            // TEXT, VARCHAR, BPCHAR, NAME, JSON: UTF-8 as sent.
            _ => PgValue::Text(raw),
        })
    }

    fn from_sql_null(_: &Type) -> Result<PgValue<'a>, BoxError> {
        Ok(PgValue::Null)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8
                | Type::INT4
                | Type::INT2
                | Type::OID
                | Type::BOOL
                | Type::FLOAT8
                | Type::FLOAT4
                | Type::NUMERIC
                | Type::BYTEA
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::JSON
                | Type::UNKNOWN
        )
    }
}

/// PostgreSQL's binary NUMERIC (what `SUM` and `AVG` of integers give): an integer when it
/// has no fraction and fits, else a float.
fn numeric(raw: &[u8]) -> Result<PgValue<'static>, BoxError> {
    let word = |i: usize| -> Result<i16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = word(0)?.max(0) as usize;
    let weight = word(1)? as i32;
    let sign = word(2)? as u16;
    let dscale = word(3)?;
    if sign == 0xC000 {
        return Ok(PgValue::Real(f64::NAN));
    }
    let mut value = 0f64;
    let mut exact: Option<i64> = Some(0);
    for i in 0..ndigits {
        let digit = word(4 + i)? as i64;
        let power = weight - i as i32;
        value += digit as f64 * 10_000f64.powi(power);
        exact = match (exact, power) {
            (Some(acc), p) if p >= 0 => 10_000i64
                .checked_pow(p as u32)
                .and_then(|m| digit.checked_mul(m))
                .and_then(|d| acc.checked_add(d)),
            (Some(acc), _) if digit == 0 => Some(acc),
            _ => None,
        };
    }
    let negative = sign == 0x4000;
    Ok(match exact {
        Some(i) if dscale == 0 => PgValue::Integer(if negative { -i } else { i }),
        _ => PgValue::Real(if negative { -value } else { value }),
    })
}

/// A rusqlite parameter sent to PostgreSQL as the type the server inferred for it.
#[derive(Debug)]
struct PgParam(types::Value);

fn pg_params(params: &[&dyn ToSql]) -> Result<Vec<PgParam>> {
    params
        .iter()
        .map(|p| {
            let out = p.to_sql()?;
            let value = match out {
                ToSqlOutput::Borrowed(v) => match v {
                    ValueRef::Null => types::Value::Null,
                    ValueRef::Integer(i) => types::Value::Integer(i),
                    ValueRef::Real(f) => types::Value::Real(f),
                    ValueRef::Text(t) => types::Value::Text(
                        std::str::from_utf8(t)
                            .map_err(|e| Error::Unsupported(format!("a text parameter: {e}")))?
                            .to_string(),
                    ),
                    ValueRef::Blob(b) => types::Value::Blob(b.to_vec()),
                },
                ToSqlOutput::Owned(v) => v,
                other => {
                    return Err(Error::Unsupported(format!(
                        "a parameter of this kind cannot go to PostgreSQL: {other:?}"
                    )));
                }
            };
            if matches!(&value, types::Value::Text(t) if t.contains('\0')) {
                return Err(Error::NulInText);
            }
            Ok(PgParam(value))
        })
        .collect()
}

impl postgres::types::ToSql for PgParam {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        use types::Value as V;
        let text_type = matches!(
            *ty,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
        );
        match &self.0 {
            V::Null => Ok(IsNull::Yes),
            V::Integer(i) => match *ty {
                Type::INT8 => put(*i, ty, out),
                Type::INT4 => put(i32::try_from(*i)?, ty, out),
                Type::INT2 => put(i16::try_from(*i)?, ty, out),
                Type::OID => put(u32::try_from(*i)?, ty, out),
                Type::BOOL => put(*i != 0, ty, out),
                Type::FLOAT8 => put(*i as f64, ty, out),
                Type::FLOAT4 => put(*i as f32, ty, out),
                _ if text_type => put(i.to_string(), ty, out),
                _ => Err(format!("an integer cannot be sent as {ty}").into()),
            },
            V::Real(f) => match *ty {
                Type::FLOAT8 => put(*f, ty, out),
                Type::FLOAT4 => put(*f as f32, ty, out),
                Type::INT8 if f.fract() == 0.0 => put(*f as i64, ty, out),
                _ if text_type => put(f.to_string(), ty, out),
                _ => Err(format!("a float cannot be sent as {ty}").into()),
            },
            V::Text(s) => match *ty {
                Type::INT8 => put(s.parse::<i64>()?, ty, out),
                Type::INT4 => put(s.parse::<i32>()?, ty, out),
                Type::FLOAT8 => put(s.parse::<f64>()?, ty, out),
                Type::BYTEA => put(s.as_bytes(), ty, out),
                _ => put(s.as_str(), &Type::TEXT, out),
            },
            V::Blob(b) => match *ty {
                Type::BYTEA => put(b.as_slice(), ty, out),
                _ if text_type => put(std::str::from_utf8(b)?, &Type::TEXT, out),
                _ => Err(format!("bytes cannot be sent as {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Write one parameter as PostgreSQL's `to_sql` of its Rust type does.
fn put<T: postgres::types::ToSql>(v: T, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    v.to_sql(ty, out)
}

/// SQLite's spelling of the few functions the store writes in PostgreSQL's.
fn to_sqlite(sql: &str) -> Cow<'_, str> {
    if sql.contains("GREATEST(") || sql.contains("LEAST(") {
        Cow::Owned(sql.replace("GREATEST(", "MAX(").replace("LEAST(", "MIN("))
    } else {
        Cow::Borrowed(sql)
    }
}

/// One lexical piece of SQL.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    /// A quoted string or identifier, an operator or punctuation: copied as is.
    Other(&'a str),
    Space(&'a str),
    Param(Option<u32>),
}

fn tokens(sql: &str) -> Result<Vec<Token<'_>>> {
    let b = sql.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Token::Word(&sql[start..i]));
        } else if c.is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            out.push(Token::Space(&sql[start..i]));
        } else if c == b'\'' || c == b'"' {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(Error::Unsupported(format!("unterminated quote in {sql}"))),
                    Some(&q) if q == c => {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(_) => i += 1,
                }
            }
            out.push(Token::Other(&sql[start..i]));
        } else if c == b'?' {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let n = if i > start + 1 {
                Some(sql[start + 1..i].parse().map_err(|_| {
                    Error::Unsupported(format!("parameter number out of range in {sql}"))
                })?)
            } else {
                None
            };
            out.push(Token::Param(n));
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            out.push(Token::Space(" "));
        } else {
            // One character (UTF-8 aware).
            let len = sql[i..].chars().next().map_or(1, char::len_utf8);
            i += len;
            out.push(Token::Other(&sql[start..i]));
        }
    }
    Ok(out)
}

/// The store's SQL (SQLite's dialect) in PostgreSQL's: `?N` and `?` parameters as `$N`;
/// `INSERT OR IGNORE` as `ON CONFLICT DO NOTHING`; the DDL types `INTEGER` (as `BIGINT`, and
/// `INTEGER PRIMARY KEY` as an identity column), `BLOB` (`BYTEA`), `REAL` (`DOUBLE
/// PRECISION`); `WITHOUT ROWID` and `INDEXED BY name` dropped; `CROSS JOIN` as `JOIN`. Quoted text is never changed. `INSERT OR REPLACE`
/// has no translation and is refused.
pub fn to_postgres(sql: &str) -> Result<String> {
    let toks = tokens(sql)?;
    let mut out = String::with_capacity(sql.len() + 32);
    let mut next_param = 0u32;
    // Statement-level state: the upsert clause still to be added before the statement ends.
    let mut ignore_conflicts = false;
    let words_at = |i: usize, want: &[&str]| -> Option<usize> {
        // The index after `want` (words separated by spaces) starting at token i.
        let mut j = i;
        for (k, w) in want.iter().enumerate() {
            if k > 0 {
                while matches!(toks.get(j), Some(Token::Space(_))) {
                    j += 1;
                }
            }
            match toks.get(j) {
                Some(Token::Word(x)) if x.eq_ignore_ascii_case(w) => j += 1,
                _ => return None,
            }
        }
        Some(j)
    };
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Token::Param(n) => {
                let n = match n {
                    Some(n) => {
                        next_param = next_param.max(*n);
                        *n
                    }
                    None => {
                        next_param += 1;
                        next_param
                    }
                };
                out.push('$');
                out.push_str(&n.to_string());
                i += 1;
            }
            Token::Word(_) => {
                if let Some(j) = words_at(i, &["INSERT", "OR", "IGNORE"]) {
                    out.push_str("INSERT");
                    ignore_conflicts = true;
                    i = j;
                } else if words_at(i, &["INSERT", "OR", "REPLACE"]).is_some() {
                    return Err(Error::Unsupported(format!(
                        "INSERT OR REPLACE has no PostgreSQL translation (use ON CONFLICT): {sql}"
                    )));
                } else if let Some(j) = words_at(i, &["INTEGER", "PRIMARY", "KEY"]) {
                    out.push_str("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY");
                    i = j;
                } else if let Some(j) = words_at(i, &["WITHOUT", "ROWID"]) {
                    i = j;
                } else if let Some(j) = words_at(i, &["INDEXED", "BY"]) {
                    // SQLite's index hint and its index name: PostgreSQL plans alone.
                    i = j;
                    while matches!(toks.get(i), Some(Token::Space(_))) {
                        i += 1;
                    }
                    i += 1;
                } else if let Some(j) = words_at(i, &["CROSS", "JOIN"]) {
                    // SQLite's CROSS JOIN fixes the join order and takes ON; PostgreSQL's
                    // takes no ON, and its planner orders joins itself.
                    out.push_str("JOIN");
                    i = j;
                } else if ignore_conflicts && words_at(i, &["RETURNING"]).is_some() {
                    out.push_str("ON CONFLICT DO NOTHING ");
                    ignore_conflicts = false;
                    out.push_str("RETURNING");
                    i += 1;
                } else {
                    let Token::Word(w) = toks[i] else {
                        unreachable!()
                    };
                    out.push_str(if w.eq_ignore_ascii_case("INTEGER") {
                        "BIGINT"
                    } else if w.eq_ignore_ascii_case("BLOB") {
                        "BYTEA"
                    } else if w.eq_ignore_ascii_case("REAL") {
                        "DOUBLE PRECISION"
                    } else {
                        w
                    });
                    i += 1;
                }
            }
            Token::Other(";") => {
                if ignore_conflicts {
                    out.push_str(" ON CONFLICT DO NOTHING");
                    ignore_conflicts = false;
                }
                out.push(';');
                i += 1;
            }
            Token::Other(s) | Token::Space(s) => {
                out.push_str(s);
                i += 1;
            }
        }
    }
    if ignore_conflicts {
        out.push_str(" ON CONFLICT DO NOTHING");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_dialect_becomes_postgres() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c = ?2 AND d = '?x'").unwrap(),
            "SELECT a FROM t WHERE b = $1 AND c = $2 AND d = '?x'"
        );
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ? AND c IN (?, ?)").unwrap(),
            "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)"
        );
        assert_eq!(
            to_postgres("INSERT OR IGNORE INTO t (a) VALUES (?1)").unwrap(),
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            to_postgres("insert or ignore into t (a) values (?1) returning id").unwrap(),
            "INSERT into t (a) values ($1) ON CONFLICT DO NOTHING RETURNING id"
        );
        assert_eq!(
            to_postgres(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL, r REAL, n integer) WITHOUT ROWID;\nINSERT OR IGNORE INTO t (id) VALUES (1);"
            )
            .unwrap(),
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, b BYTEA NOT NULL, r DOUBLE PRECISION, n BIGINT) ;\nINSERT INTO t (id) VALUES (1) ON CONFLICT DO NOTHING;"
        );
        assert!(to_postgres("INSERT OR REPLACE INTO t VALUES (1)").is_err());
        assert_eq!(
            to_postgres("SELECT a FROM t INDEXED BY t_i CROSS JOIN u ON u.a = t.a").unwrap(),
            "SELECT a FROM t  JOIN u ON u.a = t.a"
        );
        assert!(to_postgres("SELECT 'open").is_err());
        assert_eq!(to_sqlite("SELECT GREATEST(a, ?1)"), "SELECT MAX(a, ?1)");
    }

    #[test]
    fn numerics_read_as_integers_when_whole() {
        // 12345678 = 1234 * 10000 + 5678: ndigits 2, weight 1, positive, scale 0.
        let raw = [0, 2, 0, 1, 0, 0, 0, 0, 0x04, 0xD2, 0x16, 0x2E];
        assert!(matches!(
            numeric(&raw).unwrap(),
            PgValue::Integer(12_345_678)
        ));
        // -1.5: ndigits 2, weight 0, negative, scale 1: digits 1, 5000.
        let raw = [0, 2, 0, 0, 0x40, 0, 0, 1, 0, 1, 0x13, 0x88];
        assert!(matches!(numeric(&raw).unwrap(), PgValue::Real(f) if f == -1.5));
        assert!(numeric(&[0, 1]).is_err());
        // Zero has no digits.
        assert!(matches!(
            numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            PgValue::Integer(0)
        ));
    }
}
