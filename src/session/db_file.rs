//! What is at the history database's path before SQLite opens it. Read-only: config
//! validation uses it to refuse a file that is not a database, and the SQLite store
//! checks again before it opens one.

use std::io::{self, Read};
use std::path::Path;

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// What is at the database path before SQLite opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFile {
    /// Nothing, or an empty file: SQLite creates a new database there.
    New,
    Sqlite,
    /// A file with other contents. SQLite would overwrite a short one (a single
    /// byte, say) with a new database: it must be refused, never opened.
    NotSqlite,
    Directory,
}

/// Looks at `path` without creating or changing anything.
pub fn inspect_database_file(path: &Path) -> io::Result<DatabaseFile> {
    let file = match std::fs::File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DatabaseFile::New),
        other => other?,
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Ok(DatabaseFile::Directory);
    }
    if meta.len() == 0 {
        return Ok(DatabaseFile::New);
    }
    let mut head = Vec::with_capacity(SQLITE_HEADER.len());
    file.take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut head)?;
    Ok(match head == SQLITE_HEADER {
        true => DatabaseFile::Sqlite,
        false => DatabaseFile::NotSqlite,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{SqliteStore, StoreError};

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_and_left_unchanged() {
        let dir = std::env::temp_dir().join(format!("rustsocks-notdb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases: [(&str, &[u8], DatabaseFile); 4] = [
            ("one-byte", b"x", DatabaseFile::NotSqlite),
            (
                "text",
                b"SQLite format 2\0 and more",
                DatabaseFile::NotSqlite,
            ),
            ("empty", b"", DatabaseFile::New),
            ("header-only", SQLITE_HEADER, DatabaseFile::Sqlite),
        ];
        for (name, bytes, kind) in cases {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(inspect_database_file(&path).unwrap(), kind, "{name}");
            if kind == DatabaseFile::NotSqlite {
                let err = SqliteStore::open(path.to_str().unwrap(), "sqlite://x")
                    .err()
                    .expect("refused");
                assert!(matches!(err, StoreError::NotSqlite { .. }), "{err}");
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was modified");
            }
        }
        assert_eq!(
            inspect_database_file(&dir.join("absent")).unwrap(),
            DatabaseFile::New
        );
        assert_eq!(
            inspect_database_file(&dir).unwrap(),
            DatabaseFile::Directory
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
