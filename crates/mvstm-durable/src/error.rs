//! One error type for the whole durable layer.
//!
//! API.md §9 asks for a single `mvstm::durable::Error`: a caller that opens a store, saves a
//! record, enqueues a command and takes a lock handles one type, and asks it questions
//! (`is_stale`, `is_refused`) instead of matching every variant. Every variant carries owned
//! strings only, so the error is `Send + Sync + 'static` and can travel through
//! `try_atomically` (a `try_on_commit` veto) and across threads.

use std::fmt;

/// A shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a durable operation.
///
/// ```
/// use mvstm::durable::{Error, Store};
/// let err = Store::open("ftp://example.org/db").unwrap_err();
/// assert!(matches!(err, Error::UnknownScheme { .. }));
/// assert!(err.to_string().starts_with("unknown database url scheme"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `Store::open` got a URL that starts with neither `sqlite://` nor `postgres://`.
    UnknownScheme {
        /// The URL, with any password removed.
        url: String,
    },
    /// The database could not be opened or reached.
    Connect {
        /// The URL, with any password removed.
        url: String,
        /// What the driver said.
        reason: String,
    },
    /// An argument given by the caller cannot be used (an empty name, a NUL character, zero
    /// attempts).
    Invalid {
        /// Which argument: `"queue name"`, `"record key"`, `"lock owner"`...
        what: &'static str,
        /// The value, as given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `save` or `delete` named a version that is no longer the record's current version:
    /// another writer saved first.
    StaleVersion {
        /// The version the caller read and named.
        expected: u64,
        /// The version in the database now.
        actual: u64,
    },
    /// The record does not exist.
    NotFound {
        /// The record set.
        set: String,
        /// The key.
        key: String,
    },
    /// `create` found a record with this key already.
    AlreadyExists {
        /// The record set.
        set: String,
        /// The key.
        key: String,
    },
    /// `lock` could not take every resource (others hold them and do not share with this
    /// owner); nothing was taken.
    LockRefused {
        /// The resources that could not be taken.
        resources: Vec<String>,
    },
    /// A lock's lease ran out, or another owner took the resource since: the guard's fencing
    /// token is stale and the holder must not act on the resource any more.
    LockLost {
        /// The resource.
        resource: String,
        /// The guard's (stale) fencing token.
        token: u64,
    },
    /// A stored value or command could not be decoded as the requested type. The row is kept
    /// as it is (a command is moved to the dead letters).
    CorruptPayload {
        /// Where: `"record"` or `"command"`.
        what: &'static str,
        /// Which one: the record's `set/key` or the command's id.
        id: String,
        /// What the decoder said.
        reason: String,
    },
    /// A value could not be encoded as JSON.
    Encode {
        /// What the encoder said.
        reason: String,
    },
    /// The database refused or failed an operation.
    Database {
        /// What the database said.
        message: String,
        /// SQLSTATE on PostgreSQL, the extended result code on SQLite.
        code: Option<String>,
        /// Whether re-running the whole database transaction may succeed (a serialization
        /// failure, a deadlock, a busy database).
        retryable: bool,
    },
}

impl Error {
    /// Whether this error says that the caller acted on an outdated view: a record saved by
    /// someone else first (`StaleVersion`) or a lock whose fencing token is no longer current
    /// (`LockLost`).
    ///
    /// ```
    /// use mvstm::durable::Error;
    /// assert!(Error::StaleVersion { expected: 1, actual: 2 }.is_stale());
    /// ```
    pub fn is_stale(&self) -> bool {
        matches!(self, Error::StaleVersion { .. } | Error::LockLost { .. })
    }

    /// Whether `lock` was refused because other owners hold some of the resources.
    ///
    /// ```
    /// use mvstm::durable::Error;
    /// assert!(Error::LockRefused { resources: vec!["a".into()] }.is_refused());
    /// ```
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::LockRefused { .. })
    }

    /// Whether re-running the database transaction may succeed (serialization failure,
    /// deadlock, busy database).
    ///
    /// ```
    /// use mvstm::durable::Error;
    /// let e = Error::Database { message: "busy".into(), code: None, retryable: true };
    /// assert!(e.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Database {
                retryable: true,
                ..
            }
        )
    }

    pub(crate) fn invalid(what: &'static str, value: &str, reason: &'static str) -> Error {
        Error::Invalid {
            what,
            value: value.to_string(),
            reason,
        }
    }

    pub(crate) fn database(message: impl Into<String>) -> Error {
        Error::Database {
            message: message.into(),
            code: None,
            retryable: false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownScheme { url } => write!(
                f,
                "unknown database url scheme in {url:?} (expected sqlite://path or postgres://...)"
            ),
            Error::Connect { url, reason } => {
                write!(f, "cannot open database {url:?}: {reason}")
            }
            Error::Invalid {
                what,
                value,
                reason,
            } => write!(f, "invalid {what} {value:?}: {reason}"),
            Error::StaleVersion { expected, actual } => write!(
                f,
                "stale version: saved from version {expected}, but the record is at version {actual}"
            ),
            Error::NotFound { set, key } => write!(f, "no record {key:?} in set {set:?}"),
            Error::AlreadyExists { set, key } => {
                write!(f, "record {key:?} already exists in set {set:?}")
            }
            Error::LockRefused { resources } => {
                write!(f, "lock refused, held by other owners: ")?;
                for (i, r) in resources.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{r:?}")?;
                }
                Ok(())
            }
            Error::LockLost { resource, token } => write!(
                f,
                "lock on {resource:?} lost: fencing token {token} is stale (lease expired or taken over)"
            ),
            Error::CorruptPayload { what, id, reason } => {
                write!(f, "corrupt {what} payload ({id}): {reason}")
            }
            Error::Encode { reason } => write!(f, "cannot encode value as json: {reason}"),
            Error::Database { message, code, .. } => match code {
                Some(code) => write!(f, "database error {code}: {message}"),
                None => write!(f, "database error: {message}"),
            },
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        let (code, retryable) = match &e {
            rusqlite::Error::SqliteFailure(f, _) => (
                Some(f.extended_code.to_string()),
                matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ),
            ),
            _ => (None, false),
        };
        Error::Database {
            message: e.to_string(),
            code,
            retryable,
        }
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Error {
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code().to_string();
                // 40001 serialization_failure, 40P01 deadlock_detected: re-run the transaction.
                let retryable = code == "40001" || code == "40P01";
                Error::Database {
                    message: db.message().to_string(),
                    code: Some(code),
                    retryable,
                }
            }
            None => Error::database(e.to_string()),
        }
    }
}

/// Remove the password from a URL before it goes into an error message.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}{}{tail}", &authority[at..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://target/x.db"), "sqlite://target/x.db");
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: std::error::Error + Send + Sync + 'static>() {}
        check::<Error>();
    }
}
