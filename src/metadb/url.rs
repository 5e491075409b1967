//! `--db` URLs: which backend, where, and how to print it without the password.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::mysql::MySqlConnectOptions;

/// A parsed metadata-DB URL.
#[derive(Clone, Debug)]
pub enum DbUrl {
    /// `sqlite:///abs/path.db`, `sqlite://relative.db`, `sqlite::memory:`.
    Sqlite { path: Option<PathBuf> },
    /// `mysql://user:pass@host:port/db` (also `mariadb://`), with sqlx's query parameters
    /// (`?socket=…`, `?ssl-mode=…`).
    MySql {
        options: Box<MySqlConnectOptions>,
        redacted: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid --db URL {url:?}: {reason}")]
pub struct BadDbUrl {
    pub url: String,
    pub reason: String,
}

impl FromStr for DbUrl {
    type Err = BadDbUrl;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| BadDbUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url.split_once(':').ok_or_else(|| {
            bad("expected sqlite://PATH, sqlite::memory: or mysql://USER:PASS@HOST:PORT/DB")
        })?;
        match scheme {
            "sqlite" => {
                let target = rest.strip_prefix("//").unwrap_or(rest);
                if target.contains('?') {
                    return Err(bad("SQLite URLs take no parameters"));
                }
                match target {
                    "" => Err(bad(
                        "no SQLite file given (use sqlite:///abs/path.db or sqlite::memory:)",
                    )),
                    ":memory:" => Ok(DbUrl::Sqlite { path: None }),
                    path => Ok(DbUrl::Sqlite {
                        path: Some(PathBuf::from(path)),
                    }),
                }
            }
            "mysql" | "mariadb" => {
                let normalized = format!("mysql:{rest}");
                let options =
                    MySqlConnectOptions::from_str(&normalized).map_err(|e| bad(&e.to_string()))?;
                if options.get_database().is_none_or(str::is_empty) {
                    return Err(bad(
                        "no database named (e.g. mysql://user:pass@host:3306/s5)",
                    ));
                }
                Ok(DbUrl::MySql {
                    options: Box::new(options),
                    redacted: redact(url),
                })
            }
            other => Err(bad(&format!(
                "unsupported scheme {other:?} (use sqlite or mysql)"
            ))),
        }
    }
}

impl std::fmt::Display for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbUrl::Sqlite { path: None } => f.write_str("sqlite::memory:"),
            DbUrl::Sqlite { path: Some(path) } => write!(f, "sqlite://{}", path.display()),
            DbUrl::MySql { redacted, .. } => f.write_str(redacted),
        }
    }
}

/// The URL with any password replaced by `***`, safe for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // A password with an unencoded `/` or `?` ends the authority early (and the URL will not
    // parse, so this is what the error shows): then everything up to the last `@` is the
    // userinfo. Masking too much is fine here; showing a password is not.
    let (userinfo, host_and_tail) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (userinfo, format!("{host}{tail}")),
        None => match rest.rsplit_once('@') {
            Some((userinfo, after)) => (userinfo, after.to_owned()),
            None => return url.to_owned(),
        },
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host_and_tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_forms() {
        assert!(matches!(
            "sqlite::memory:".parse(),
            Ok(DbUrl::Sqlite { path: None })
        ));
        assert!(matches!(
            "sqlite://:memory:".parse(),
            Ok(DbUrl::Sqlite { path: None })
        ));
        let Ok(DbUrl::Sqlite { path: Some(path) }) = "sqlite:///var/lib/pf/meta.db".parse() else {
            panic!()
        };
        assert_eq!(path, PathBuf::from("/var/lib/pf/meta.db"));
        let Ok(DbUrl::Sqlite { path: Some(path) }) = "sqlite://meta.db".parse() else {
            panic!()
        };
        assert_eq!(path, PathBuf::from("meta.db"));
        assert!("sqlite://".parse::<DbUrl>().is_err());
        assert!("sqlite://x.db?mode=ro".parse::<DbUrl>().is_err());
    }

    #[test]
    fn mysql_forms() {
        let Ok(DbUrl::MySql { options, redacted }) = "mysql://pf:secret@127.0.0.1:3307/s5".parse()
        else {
            panic!()
        };
        assert_eq!(options.get_host(), "127.0.0.1");
        assert_eq!(options.get_port(), 3307);
        assert_eq!(options.get_database(), Some("s5"));
        assert_eq!(redacted, "mysql://pf:***@127.0.0.1:3307/s5");
        assert!(matches!(
            "mariadb://root@localhost/s5?socket=/tmp/s".parse(),
            Ok(DbUrl::MySql { .. })
        ));
    }

    #[test]
    fn errors_are_clear_and_never_show_the_password() {
        let err = "mysql://pf:secret@127.0.0.1:3307"
            .parse::<DbUrl>()
            .unwrap_err();
        assert!(err.to_string().contains("no database named"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = "postgres://pf:secret@h/db".parse::<DbUrl>().unwrap_err();
        assert!(
            err.to_string().contains("unsupported scheme \"postgres\""),
            "{err}"
        );
        assert!(!err.to_string().contains("secret"));
        assert!(
            "just-a-file.db"
                .parse::<DbUrl>()
                .unwrap_err()
                .to_string()
                .contains("expected sqlite://")
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("mysql://u:p@h:1/db?x=1"), "mysql://u:***@h:1/db?x=1");
        assert_eq!(redact("mysql://u@h/db"), "mysql://u@h/db");
        assert_eq!(redact("mysql://u:p:q@h/db"), "mysql://u:***@h/db");
        assert_eq!(redact("sqlite:///a/b.db"), "sqlite:///a/b.db");
        // Unencoded `/` or `?` in the password (such a URL does not parse, and is shown).
        assert_eq!(
            redact("mysql://root:pa/ss@h:3306/s5"),
            "mysql://root:***@h:3306/s5"
        );
        assert_eq!(redact("mysql://root:pa?ss@h/s5"), "mysql://root:***@h/s5");
        assert_eq!(redact("mysql://root:a/b@c@h/s5"), "mysql://root:***@h/s5");
    }
}
