//! One database connection of either kind, and [`Db`], the handle on an open transaction.
//!
//! The records, the queue and the locks write their SQL once, in the dialect both databases
//! share (`INSERT ... ON CONFLICT`, `UPDATE ... RETURNING`, `CAST`), with PostgreSQL's `$1`
//! placeholders; on SQLite they are rewritten to `?1`. Where the dialects must differ (the
//! schema's column types, `FOR UPDATE SKIP LOCKED`, the clock) the caller asks
//! [`Db::backend`].
//!
//! Every value a caller gives (names, keys, payloads) travels as a bound [`Value`], never
//! pasted into the SQL text.
//!
//! Times come from the database's clock ([`Db::now_ms`]), not the caller's: leases are compared
//! by processes on several hosts, and the database is the one clock they share.

use crate::error::{Error, Result};
use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type};
use std::fmt;

/// Which database a store talks to.
///
/// ```
/// use mvstm::durable::{Backend, Store};
/// let store = Store::open("sqlite://target/doc-backend.db")?;
/// assert_eq!(store.backend(), Backend::Sqlite);
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// SQLite in a file.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A value bound to a statement parameter, or read from a result column.
///
/// ```
/// use mvstm::durable::Value;
/// assert_eq!(Value::from(3i64), Value::Int(3));
/// assert_eq!(Value::from("x"), Value::Text("x".into()));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// An integer (any width on PostgreSQL: it is narrowed to the parameter's type).
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
}

impl Value {
    /// The integer in this value, if it is one.
    ///
    /// ```
    /// assert_eq!(mvstm::durable::Value::Int(7).as_i64(), Some(7));
    /// ```
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The text in this value, if it is text.
    ///
    /// ```
    /// assert_eq!(mvstm::durable::Value::from("a").as_str(), Some("a"));
    /// ```
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                _ => r.to_sql(ty, out),
            },
            Value::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::BOOL
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::UNKNOWN
        )
    }

    postgres::types::to_sql_checked!();
}

/// An open connection of either kind.
pub(crate) enum Conn {
    Sqlite(rusqlite::Connection),
    Pg(Box<postgres::Client>),
}

/// How a transaction starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// Writes with explicit row locks: SQLite `BEGIN IMMEDIATE` (the write lock up front, so
    /// two writers never both read and then deadlock upgrading), PostgreSQL read committed.
    Write,
    /// A caller's transaction: SQLite `BEGIN IMMEDIATE` (serializable by construction),
    /// PostgreSQL `SERIALIZABLE`, whose serialization failures are re-run.
    Serializable,
    /// Reads only: SQLite deferred `BEGIN` (WAL readers never wait for the writer).
    Read,
}

impl Conn {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Pg(_) => Backend::Postgres,
        }
    }

    pub(crate) fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => c.execute_batch(sql)?,
            Conn::Pg(c) => c.batch_execute(sql)?,
        }
        Ok(())
    }

    pub(crate) fn begin(&mut self, begin: Begin) -> Result<()> {
        let sql = match (self.backend(), begin) {
            (Backend::Sqlite, Begin::Read) => "BEGIN",
            (Backend::Sqlite, _) => "BEGIN IMMEDIATE",
            (Backend::Postgres, Begin::Serializable) => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            (Backend::Postgres, _) => "BEGIN",
        };
        self.batch(sql)
    }

    /// Whether the connection can go back to the pool.
    pub(crate) fn is_usable(&mut self) -> bool {
        match self {
            Conn::Sqlite(c) => c.is_autocommit(),
            Conn::Pg(c) => !c.is_closed(),
        }
    }
}

/// A database transaction in progress: what a [`Store::transaction`](crate::Store::transaction)
/// or [`Store::commit_with`](crate::Store::commit_with) closure gets.
///
/// Parameters are written `$1`, `$2`, ... on both databases (they are rewritten to `?1`, `?2`
/// for SQLite outside quoted strings). Commit and rollback belong to the store: the closure
/// returns `Ok` to commit and `Err` to roll back.
///
/// ```
/// use mvstm::durable::{Store, Value};
/// let store = Store::open("sqlite://target/doc-db.db")?;
/// store.transaction(|db| db.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)"))?;
/// let n = store.transaction(|db| {
///     db.execute_params("INSERT INTO notes (body) VALUES ($1)", &["it's".into()])?;
///     db.query_i64("SELECT COUNT(*) FROM notes WHERE body = $1", &[Value::from("it's")])
/// })?;
/// assert!(n >= Some(1));
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
pub struct Db<'a> {
    conn: &'a mut Conn,
}

impl fmt::Debug for Db<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.conn.backend())
            .finish()
    }
}

impl<'a> Db<'a> {
    pub(crate) fn new(conn: &'a mut Conn) -> Db<'a> {
        Db { conn }
    }

    /// Which database this transaction runs on.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-db.db")?;
    /// let backend = store.transaction(|db| Ok(db.backend()))?;
    /// assert_eq!(backend, mvstm::durable::Backend::Sqlite);
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn backend(&self) -> Backend {
        self.conn.backend()
    }

    /// Run one statement without parameters; returns the number of rows it changed.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-db.db")?;
    /// store.transaction(|db| db.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))?;
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn execute(&mut self, sql: &str) -> Result<u64> {
        self.execute_params(sql, &[])
    }

    /// Run one statement with parameters `$1`, `$2`, ...; returns the number of rows changed.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-db.db")?;
    /// store.transaction(|db| db.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))?;
    /// let n = store.transaction(|db| db.execute_params("INSERT INTO t (x) VALUES ($1)", &[5i64.into()]))?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn execute_params(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        match &mut *self.conn {
            Conn::Sqlite(c) => {
                let sql = sqlite_placeholders(sql);
                let mut stmt = c.prepare_cached(&sql)?;
                let n = stmt.execute(rusqlite::params_from_iter(params.iter()))?;
                Ok(n as u64)
            }
            Conn::Pg(c) => {
                let refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                Ok(c.execute(sql, &refs)?)
            }
        }
    }

    /// Run a query with parameters; returns every row as a vector of values.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-db.db")?;
    /// let rows = store.transaction(|db| db.query("SELECT 1 + $1", &[2i64.into()]))?;
    /// assert_eq!(rows[0][0].as_i64(), Some(3));
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        match &mut *self.conn {
            Conn::Sqlite(c) => {
                let sql = sqlite_placeholders(sql);
                let mut stmt = c.prepare_cached(&sql)?;
                let columns = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let mut values = Vec::with_capacity(columns);
                    for i in 0..columns {
                        use rusqlite::types::ValueRef;
                        values.push(match row.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(i) => Value::Int(i),
                            ValueRef::Real(r) => Value::Real(r),
                            ValueRef::Text(t) | ValueRef::Blob(t) => {
                                Value::Text(String::from_utf8_lossy(t).into_owned())
                            }
                        });
                    }
                    out.push(values);
                }
                Ok(out)
            }
            Conn::Pg(c) => {
                let refs: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let rows = c.query(sql, &refs)?;
                rows.iter().map(pg_row).collect()
            }
        }
    }

    /// Run a query whose first row's first column is an integer (or NULL, or no row: `None`).
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-db.db")?;
    /// assert_eq!(store.transaction(|db| db.query_i64("SELECT 40 + 2", &[]))?, Some(42));
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn query_i64(&mut self, sql: &str, params: &[Value]) -> Result<Option<i64>> {
        let rows = self.query(sql, params)?;
        Ok(rows.first().and_then(|r| r.first()).and_then(Value::as_i64))
    }

    /// The database clock in milliseconds since the Unix epoch: the one clock that every
    /// process sharing the database reads, so leases compare across hosts.
    pub(crate) fn now_ms(&mut self) -> Result<i64> {
        let sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
            }
            Backend::Postgres => {
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
            }
        };
        self.query_i64(sql, &[])?
            .ok_or_else(|| Error::database("the database clock returned nothing"))
    }
}

fn pg_row(row: &postgres::Row) -> Result<Vec<Value>> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let v = match *ty {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.into(),
            Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(i64::from).into(),
            Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(i64::from).into(),
            Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(i64::from).into(),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.into(),
            Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map(f64::from).into(),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(i)?.into()
            }
            _ => {
                return Err(Error::database(format!(
                    "column {:?} has type {ty}, which Db::query does not read (cast it to text)",
                    column.name()
                )))
            }
        };
        values.push(v);
    }
    Ok(values)
}

/// Rewrite `$1` placeholders to SQLite's `?1`, leaving quoted strings and identifiers alone.
pub(crate) fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    out.push(c);
                } else if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    out.push('?');
                } else {
                    out.push(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sqlite_placeholders;

    #[test]
    fn placeholders_rewritten_outside_quotes() {
        assert_eq!(
            sqlite_placeholders("SELECT $1, '$2', \"$3\", $4 WHERE x = 'it''s $5'"),
            "SELECT ?1, '$2', \"$3\", ?4 WHERE x = 'it''s $5'"
        );
    }
}
