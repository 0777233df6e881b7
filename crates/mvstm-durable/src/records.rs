//! Versioned records: JPA's `@Version` on a table that many processes update.
//!
//! A record is a row `(set_name, key, version, value)` with the value as JSON. A reader gets
//! the value and its version; a writer names the version it read, and the save is one
//!
//! ```sql
//! UPDATE mvstm_records SET value = $4, version = version + 1
//!  WHERE set_name = $1 AND key = $2 AND version = $3
//! ```
//!
//! whose changed-row count decides: 1, the save won; 0, someone saved first (or the record is
//! gone), and only then is the current version read, to report `StaleVersion { expected,
//! actual }`. The database serializes the `UPDATE`s on the row, so among any number of savers
//! of one version, in any number of processes, exactly one changes a row. There is no
//! read-then-write window for a race.

use crate::db::{Begin, Db, Value};
use crate::error::{Error, Result};
use crate::store::{check_name, Store};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::marker::PhantomData;

/// The records of one set, values of type `T` stored as JSON. From [`Store::records`].
///
/// ```
/// use mvstm::durable::Store;
/// let store = Store::open("sqlite://target/doc-records.db")?;
/// let names = store.records::<String>("names")?;
/// # let _ = names.delete_any("joe");
/// names.create("joe", &"Joe".to_string())?;
/// let (name, version) = names.get("joe")?.expect("created");
/// assert_eq!((name.as_str(), version), ("Joe", 1));
/// names.save("joe", version, &"Jack".to_string())?;
/// assert!(names.save("joe", version, &"Jill".to_string()).unwrap_err().is_stale());
/// # Ok::<(), mvstm::durable::Error>(())
/// ```
pub struct Records<T> {
    store: Store,
    set: String,
    _values: PhantomData<fn(T) -> T>,
}

// Opened from a `Store`; here rather than in `store.rs`, so that the store module does not
// import the modules built on it.
impl Store {
    /// The versioned records of set `name` (JPA's `@Version`), with values of type `T`
    /// stored as JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if `name` is empty or contains a NUL character.
    ///
    /// ```
    /// let store = mvstm::durable::Store::open("sqlite://target/doc-store.db")?;
    /// let prices = store.records::<u32>("prices")?;
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn records<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Records<T>> {
        check_name("record set name", name)?;
        Ok(Records::new(self.clone(), name.to_string()))
    }
}

impl<T> Clone for Records<T> {
    fn clone(&self) -> Self {
        Records {
            store: self.store.clone(),
            set: self.set.clone(),
            _values: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Records<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records").field("set", &self.set).finish()
    }
}

impl<T: Serialize + DeserializeOwned> Records<T> {
    pub(crate) fn new(store: Store, set: String) -> Records<T> {
        Records {
            store,
            set,
            _values: PhantomData,
        }
    }

    /// The set's name.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-records.db")?;
    /// assert_eq!(store.records::<u8>("s")?.name(), "s");
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.set
    }

    /// Create record `key` with `value` at version 1.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyExists`] if the key exists; [`Error::Invalid`] for an empty key.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-records.db")?;
    /// let counters = store.records::<u64>("counters")?;
    /// # let _ = counters.delete_any("hits");
    /// assert_eq!(counters.create("hits", &0)?, 1);
    /// assert!(counters.create("hits", &0).is_err());
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn create(&self, key: &str, value: &T) -> Result<u64> {
        check_name("record key", key)?;
        let json = encode(value)?;
        self.store.run(Begin::Write, |db| {
            let n = db.execute_params(
                "INSERT INTO mvstm_records (set_name, key, version, value) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (set_name, key) DO NOTHING",
                &[self.set.as_str().into(), key.into(), json.as_str().into()],
            )?;
            if n == 0 {
                return Err(Error::AlreadyExists {
                    set: self.set.clone(),
                    key: key.to_string(),
                });
            }
            Ok(1)
        })
    }

    /// The value of record `key` and its version, or `None` if there is no such record.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptPayload`] if the stored JSON is not a `T`.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-records.db")?;
    /// assert!(store.records::<u64>("counters")?.get("no such key")?.is_none());
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn get(&self, key: &str) -> Result<Option<(T, u64)>> {
        check_name("record key", key)?;
        let row = self.store.run(Begin::Read, |db| {
            let rows = db.query(
                "SELECT version, value FROM mvstm_records WHERE set_name = $1 AND key = $2",
                &[self.set.as_str().into(), key.into()],
            )?;
            Ok(rows.into_iter().next())
        })?;
        let Some(row) = row else { return Ok(None) };
        let version = row[0].as_i64().unwrap_or(0) as u64;
        let json = row[1].as_str().unwrap_or("");
        let value = serde_json::from_str(json).map_err(|e| Error::CorruptPayload {
            what: "record",
            id: format!("{}/{}", self.set, key),
            reason: e.to_string(),
        })?;
        Ok(Some((value, version)))
    }

    /// Replace record `key`'s value, if its version is still `version`; returns the new version
    /// (`version + 1`).
    ///
    /// # Errors
    ///
    /// [`Error::StaleVersion`] if another writer saved first; [`Error::NotFound`] if there is
    /// no such record.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-records.db")?;
    /// let counters = store.records::<u64>("counters")?;
    /// # let _ = counters.delete_any("visits");
    /// counters.create("visits", &0)?;
    /// assert_eq!(counters.save("visits", 1, &1)?, 2);
    /// let stale = counters.save("visits", 1, &5).unwrap_err();
    /// assert_eq!(stale, mvstm::durable::Error::StaleVersion { expected: 1, actual: 2 });
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn save(&self, key: &str, version: u64, value: &T) -> Result<u64> {
        check_name("record key", key)?;
        let json = encode(value)?;
        self.store.run(Begin::Write, |db| {
            let n = db.execute_params(
                "UPDATE mvstm_records SET value = $4, version = version + 1 \
                 WHERE set_name = $1 AND key = $2 AND version = $3",
                &[
                    self.set.as_str().into(),
                    key.into(),
                    version_param(version),
                    json.as_str().into(),
                ],
            )?;
            if n == 1 {
                Ok(version + 1)
            } else {
                Err(self.why_not(db, key, version)?)
            }
        })
    }

    /// Delete record `key` if its version is still `version`.
    ///
    /// # Errors
    ///
    /// [`Error::StaleVersion`] or [`Error::NotFound`], as for [`Records::save`].
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-records.db")?;
    /// let tmp = store.records::<u8>("tmp")?;
    /// # let _ = tmp.delete_any("k");
    /// tmp.create("k", &1)?;
    /// tmp.delete("k", 1)?;
    /// assert!(tmp.get("k")?.is_none());
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn delete(&self, key: &str, version: u64) -> Result<()> {
        check_name("record key", key)?;
        self.store.run(Begin::Write, |db| {
            let n = db.execute_params(
                "DELETE FROM mvstm_records WHERE set_name = $1 AND key = $2 AND version = $3",
                &[self.set.as_str().into(), key.into(), version_param(version)],
            )?;
            if n == 1 {
                Ok(())
            } else {
                Err(self.why_not(db, key, version)?)
            }
        })
    }

    /// Delete record `key` whatever its version; returns whether it existed.
    ///
    /// ```
    /// # let store = mvstm::durable::Store::open("sqlite://target/doc-records.db")?;
    /// assert!(!store.records::<u8>("tmp")?.delete_any("never created")?);
    /// # Ok::<(), mvstm::durable::Error>(())
    /// ```
    pub fn delete_any(&self, key: &str) -> Result<bool> {
        check_name("record key", key)?;
        self.store.run(Begin::Write, |db| {
            let n = db.execute_params(
                "DELETE FROM mvstm_records WHERE set_name = $1 AND key = $2",
                &[self.set.as_str().into(), key.into()],
            )?;
            Ok(n > 0)
        })
    }

    /// After a conditional write changed no row: the error that says why.
    fn why_not(&self, db: &mut Db<'_>, key: &str, expected: u64) -> Result<Error> {
        let actual = db.query_i64(
            "SELECT version FROM mvstm_records WHERE set_name = $1 AND key = $2",
            &[self.set.as_str().into(), key.into()],
        )?;
        Ok(match actual {
            Some(actual) => Error::StaleVersion {
                expected,
                actual: actual as u64,
            },
            None => Error::NotFound {
                set: self.set.clone(),
                key: key.to_string(),
            },
        })
    }
}

/// Versions are `u64` in the API and `BIGINT` in the table; one beyond `i64::MAX` matches no
/// row, which is the truth.
fn version_param(version: u64) -> Value {
    Value::Int(i64::try_from(version).unwrap_or(-1))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Encode {
        reason: e.to_string(),
    })
}
