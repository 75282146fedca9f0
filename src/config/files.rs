//! Checks that read the file system: the API token file and the sessions database.
//! They run with the other checks in `validate`, so `check-config` reports them
//! and start-up fails on them before binding anything. Nothing here creates or
//! changes a file.

use std::io;
use std::path::Path;

use super::validate::Problem;
use super::{Config, Secret};
use crate::session::{inspect_database_file, DatabaseFile};

pub(super) fn problems(config: &Config, out: &mut Vec<Problem>) {
    if let (None, Some(path)) = (&config.api.token, &config.api.token_file) {
        if let Err(problem) = read_token_file(path) {
            out.push(problem);
        }
    }
    if config.sessions.enabled {
        database_problems(config, out);
    }
    // Loads the files as start-up will: a certificate that does not go with its
    // key is found by `check-config` too.
    for (section, prefix) in [
        (&config.server.tls, "server.tls"),
        (&config.api.tls, "api.tls"),
    ] {
        if section.enabled {
            if let Err(e) = crate::tls::server_config(section, prefix) {
                out.push(Problem::new(e.key, format!("\"{}\"", e.path), e.why));
            }
        }
    }
}

/// The token in `path`, trailing newline removed. The problem names the key, the
/// path and the cause: missing, a directory, unreadable or empty.
pub(super) fn read_token_file(path: &Path) -> Result<Secret, Problem> {
    let cause = match std::fs::read_to_string(path) {
        Ok(text) => match text.trim_end_matches(['\r', '\n']) {
            "" => "it is empty".to_owned(),
            token => return Ok(Secret::new(token)),
        },
        Err(_) if path.is_dir() => "it is a directory".to_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => "it does not exist".to_owned(),
        Err(e) => format!("cannot read it: {}", io_cause(&e)),
    };
    Err(Problem::new(
        "api.token_file",
        format!("\"{}\"", path.display()),
        format!("a readable file holding the token ({cause})"),
    ))
}

fn database_problems(config: &Config, out: &mut Vec<Problem>) {
    let s = &config.sessions;
    // A URL that is not a SQLite file path has its own problem in `validate`.
    let Some(path) = s.sqlite_path().filter(|p| !p.contains(":memory:")) else {
        return;
    };
    let path = Path::new(path);
    let mut problem = |expected: String| {
        out.push(Problem::new(
            "sessions.database_url",
            format!("\"{}\"", s.database_url),
            expected,
        ))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let why = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some("is not a directory".to_owned()),
            Err(e) => Some(io_cause(&e)),
        };
        if let Some(why) = why {
            return problem(format!(
                "a file in an existing directory ({}: {why})",
                dir.display()
            ));
        }
    }
    match inspect_database_file(path) {
        Ok(DatabaseFile::New | DatabaseFile::Sqlite) => {}
        Ok(DatabaseFile::NotSqlite) => problem(format!(
            "a SQLite database, or a path where no file exists yet: {} exists and is not \
             a SQLite database (it is left untouched; fix the path or move the file away)",
            path.display()
        )),
        Ok(DatabaseFile::Directory) => problem(format!(
            "a database file: {} is a directory",
            path.display()
        )),
        Err(e) => problem(format!(
            "a readable database file: {}: {}",
            path.display(),
            io_cause(&e)
        )),
    }
}

/// A cause in words, without the OS error number.
fn io_cause(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "it does not exist".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("rustsocks-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn token_file_problems_name_the_key_the_path_and_the_cause() {
        let dir = temp_dir("token-file");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "s3cret\r\n").unwrap();
        assert_eq!(read_token_file(&good).unwrap().expose(), "s3cret");
        for (path, cause) in [
            (dir.join("missing"), "it does not exist"),
            (dir.clone(), "it is a directory"),
            (empty, "it is empty"),
        ] {
            let problem = read_token_file(&path).unwrap_err().to_string();
            let expected = format!(
                "api.token_file = \"{}\": expected a readable file holding the token ({cause})",
                path.display()
            );
            assert_eq!(problem, expected);
        }
        // Root reads any file, so only another user can see "permission denied".
        if unsafe { libc::geteuid() } != 0 {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o200)).unwrap();
            let problem = read_token_file(&good).unwrap_err().to_string();
            assert!(
                problem.ends_with("(cannot read it: permission denied)"),
                "{problem}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
