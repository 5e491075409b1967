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
        // A URL kept in a Secret often ends in a newline (`--from-file`): sqlx trims a MySQL
        // URL, and a SQLite one would otherwise name a file ending in it.
        let url = url.trim();
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
                if target.contains(char::is_control) {
                    return Err(bad("a control character in the SQLite file's path"));
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
            "mysql" | "mariadb" if !rest.starts_with("//") => Err(bad(
                "expected mysql://USER:PASS@HOST:PORT/DB (the '//' is missing)",
            )),
            "mysql" | "mariadb" => {
                // An `@` after the host is a password's unencoded `/`, `?`, `#` or `@`, or one in
                // a parameter: which, a URL cannot tell (nor can the redaction of this one).
                let tail = authority_and_tail(url).map_or("", |(_, _, tail)| tail);
                if tail.contains('@') {
                    return Err(bad(
                        "an '@' after the host: percent-encode '@', '/', '?' and '#' in the user name, password and parameters (%40, %2F, %3F, %23)",
                    ));
                }
                // sqlx ignores a parameter it does not know: `?user=pf&password=…` (a JDBC
                // habit) would connect as root without a password, and say nothing.
                if let Some(query) = query_of(tail) {
                    // (`db?` and `a=1&&b=2` hold empty parameters: nothing to check.)
                    for name in query
                        .split('&')
                        .filter(|p| !p.is_empty())
                        .map(|p| p.split_once('=').map_or(p, |kv| kv.0))
                    {
                        if matches!(name, "user" | "password") {
                            return Err(bad(
                                "user and password go before the host: mysql://USER:PASS@HOST:PORT/DB",
                            ));
                        }
                        if !MYSQL_PARAMETERS.contains(&name) {
                            return Err(bad(&format!(
                                "unknown parameter {name:?} (known: {})",
                                MYSQL_PARAMETERS.join(", ")
                            )));
                        }
                    }
                }
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

/// The query parameters sqlx reads from a MySQL URL (any other it would silently ignore).
const MYSQL_PARAMETERS: [&str; 15] = [
    "sslmode",
    "ssl-mode",
    "sslca",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "charset",
    "collation",
    "tls-sni-servername",
    "statement-cache-capacity",
    "socket",
    "timezone",
    "time-zone",
];

/// The URL with any password replaced by `***`, safe for logs and errors: the userinfo's, and
/// the value of any query parameter other than sqlx's own (`?password=…`, which is refused, is
/// shown in the error that says so). A URL with an `@` after its host (an unencoded `/`, `?`
/// or `@` in a password, most likely) shows nothing after its scheme: where the password ends
/// cannot be told, and masking too much is fine here; showing a password is not.
pub fn redact(url: &str) -> String {
    let Some((scheme, authority, tail)) = authority_and_tail(url) else {
        // Without `//` nothing tells where a password would be (`mysql:u:p@h/db`,
        // `u:p@h/db`): only a SQLite URL, which holds none, is shown.
        return match url.split_once(':') {
            Some(("sqlite", _)) => url.to_owned(),
            Some((scheme @ ("mysql" | "mariadb"), _)) => format!("{scheme}:***"),
            _ => "***".to_owned(),
        };
    };
    if tail.contains('@') {
        return format!("{scheme}://***");
    }
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = query
                .split_once('#')
                .map_or((query, None), |(q, f)| (q, Some(f)));
            let parameters: Vec<String> = query
                .split('&')
                .map(|parameter| match parameter.split_once('=') {
                    Some((name, _)) if !MYSQL_PARAMETERS.contains(&name) => format!("{name}=***"),
                    _ => parameter.to_owned(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", parameters.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `scheme://authority tail` as a URL parser splits it: the authority ends at the first `/`,
/// `?` or `#`.
fn authority_and_tail(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((scheme, &rest[..end], &rest[end..]))
}

/// The query of a URL's `tail` (after the authority), without its fragment.
fn query_of(tail: &str) -> Option<&str> {
    let (_, query) = tail.split_once('?')?;
    Some(query.split_once('#').map_or(query, |(query, _)| query))
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
        // As a Secret made with `--from-file` has it.
        let Ok(DbUrl::Sqlite { path: Some(path) }) = "sqlite:///var/lib/pf/meta.db\n".parse()
        else {
            panic!()
        };
        assert_eq!(path, PathBuf::from("/var/lib/pf/meta.db"));
        assert!(matches!(
            " sqlite::memory:\r\n".parse(),
            Ok(DbUrl::Sqlite { path: None })
        ));
        assert!("sqlite:///a\tb.db".parse::<DbUrl>().is_err());
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
            "mariadb://root@localhost/s5?socket=/tmp/s&ssl-mode=required".parse(),
            Ok(DbUrl::MySql { .. })
        ));
        for url in ["mysql://pf@db/s5?", "mysql://pf@db/s5?ssl-mode=required&"] {
            let Ok(DbUrl::MySql { options, .. }) = url.parse() else {
                panic!("{url}")
            };
            assert_eq!(options.get_database(), Some("s5"), "{url}");
        }
    }

    /// A password's unencoded `#` ends the authority: the rest (`@host/db`) is refused with
    /// how to write it, and nothing of the password is shown.
    #[test]
    fn a_hash_in_a_password_must_be_percent_encoded() {
        let error = "mysql://pf:se#cret@db/s5".parse::<DbUrl>().unwrap_err();
        assert!(
            error.reason.contains("'#'") && error.reason.contains("%23"),
            "{error}"
        );
        assert!(!error.to_string().contains("cret"), "{error}");
        let Ok(DbUrl::MySql { options, redacted }) = "mysql://pf:se%23cret@db/s5".parse() else {
            panic!()
        };
        assert_eq!(options.get_host(), "db");
        assert_eq!(redacted, "mysql://pf:***@db/s5");
    }

    /// sqlx ignores parameters it does not know, so `?password=` would connect without one.
    #[test]
    fn parameters_sqlx_would_ignore_are_refused_without_showing_their_values() {
        let err = "mysql://db:3306/s5?user=pf&password=p@ss"
            .parse::<DbUrl>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("percent-encode"), "{err}");
        assert!(!err.contains("p@ss") && !err.contains("pf"), "{err}");
        let err = "mysql://db:3306/s5?user=pf&password=secret"
            .parse::<DbUrl>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("user and password go before the host"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        let err = "mysql://pf:p@db/s5?ssl_mode=required&token=secret"
            .parse::<DbUrl>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown parameter \"ssl_mode\""), "{err}");
        assert!(!err.contains("secret"), "{err}");
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
        assert_eq!(
            redact("mysql://u:p@h:1/db?x=1"),
            "mysql://u:***@h:1/db?x=***"
        );
        assert_eq!(
            redact("mysql://h/db?socket=/s&password=p"),
            "mysql://h/db?socket=/s&password=***"
        );
        assert_eq!(redact("mysql://u@h/db"), "mysql://u@h/db");
        assert_eq!(redact("mysql://u:p:q@h/db"), "mysql://u:***@h/db");
        assert_eq!(redact("sqlite:///a/b.db"), "sqlite:///a/b.db");
        // Unencoded `/` or `?` in the password, or an `@` in a parameter: where the password
        // ends cannot be told, nothing is shown.
        for url in [
            "mysql://root:pa/ss@h:3306/s5",
            "mysql://root:pa?ss@h/s5",
            "mysql://root:pa?ss=x@h/s5",
            "mysql://root:a/b@c@h/s5",
            "mysql://db:3306/s5?user=pf&password=p@ss",
        ] {
            assert_eq!(redact(url), "mysql://***", "{url}");
        }
        // No `//`: nothing tells the password from the rest.
        assert_eq!(redact("mysql:pf:secret@db:3306/s5"), "mysql:***");
        assert_eq!(redact("mariadb:/pf:secret@db/s5"), "mariadb:***");
        assert_eq!(redact("root:secret@db/s5"), "***");
        assert_eq!(redact("pf-secret"), "***");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    }

    /// sqlx reads `mysql:pf:secret@db/s5` as a URL with no host (localhost) whose database is
    /// named `pf:secret@db/s5`: refused, and the error does not show the password.
    #[test]
    fn a_mysql_url_without_its_slashes_is_refused_without_showing_the_password() {
        for url in ["mysql:pf:secret@db:3306/s5", "mariadb:/pf:secret@db/s5"] {
            let error = url.parse::<DbUrl>().unwrap_err();
            assert!(error.reason.contains("the '//' is missing"), "{error}");
            assert!(!error.to_string().contains("secret"), "{error}");
        }
        let error = "root:secret@db/s5".parse::<DbUrl>().unwrap_err();
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
