//! The store URL: `scylla://[user:password@]host[:port][,host2[:port]...]/keyspace
//! [?replication_factor=N]`.
//!
//! The keyspace name is interpolated into CQL (DDL cannot bind it), so it is restricted to
//! an unquoted CQL identifier. The replication factor only matters to `distorch migrate`,
//! which creates the keyspace with `NetworkTopologyStrategy` and that factor in every
//! datacenter (default 1, for a single dev node; production wants 3).

use crate::StoreError;

/// The port of a host that names none (CQL's native protocol port).
pub const DEFAULT_PORT: u16 = 9042;

/// A parsed store URL (see the module docs for its form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScyllaUrl {
    /// `host:port` of each contact point.
    pub nodes: Vec<String>,
    /// The keyspace, lower-cased (CQL folds unquoted names); a plain CQL identifier, safe to
    /// interpolate.
    pub keyspace: String,
    /// User name and password, when the URL carries them.
    pub credentials: Option<(String, String)>,
    /// Replicas per datacenter of a keyspace `distorch migrate` creates; 1 unless the URL sets it.
    pub replication_factor: u32,
}

fn bad(url: &str, why: &str) -> StoreError {
    StoreError::Setup(format!(
        "bad ScyllaDB URL {:?}: {why} (expected scylla://host:9042[,host2]/keyspace)",
        redact(url)
    ))
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl ScyllaUrl {
    /// Parses and checks a URL; a malformed one is [`StoreError::Setup`], with the password
    /// redacted.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let rest = url
            .strip_prefix("scylla://")
            .ok_or_else(|| bad(url, "the scheme must be scylla://"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, keyspace) = rest
            .split_once('/')
            .ok_or_else(|| bad(url, "no keyspace"))?;
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (user, password) = userinfo
                    .split_once(':')
                    .ok_or_else(|| bad(url, "credentials must be user:password"))?;
                (Some((user.to_owned(), password.to_owned())), hosts)
            }
            None => (None, authority),
        };

        let mut nodes = Vec::new();
        for host in hosts.split(',') {
            nodes.push(node(host).ok_or_else(|| bad(url, "a host is empty or its port bad"))?);
        }
        if !is_identifier(keyspace) {
            return Err(bad(
                url,
                "the keyspace must be a CQL identifier: a letter, then letters, digits or _, \
                 at most 48",
            ));
        }

        let mut replication_factor = 1;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("replication_factor", n)) => {
                    replication_factor =
                        n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            bad(url, "replication_factor must be a positive integer")
                        })?;
                }
                _ => return Err(bad(url, &format!("unknown option {pair:?}"))),
            }
        }
        Ok(Self {
            nodes,
            keyspace: keyspace.to_ascii_lowercase(),
            credentials,
            replication_factor,
        })
    }
}

/// `host` or `host:port` (IPv6 as `[::1]:9042`) as `host:port`.
fn node(host: &str) -> Option<String> {
    if host.is_empty() {
        return None;
    }
    let has_port = match host.rfind(':') {
        Some(i) if host.starts_with('[') => host[..i].ends_with(']'),
        Some(_) => true,
        None => false,
    };
    if !has_port {
        return Some(format!("{host}:{DEFAULT_PORT}"));
    }
    let (name, port) = host.rsplit_once(':')?;
    (!name.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)).then(|| host.to_owned())
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 48
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_keyspace() {
        let url = ScyllaUrl::parse("scylla://10.0.0.1:9043,db2/DisTorch").unwrap();
        assert_eq!(url.nodes, ["10.0.0.1:9043", "db2:9042"]);
        assert_eq!(
            url.keyspace, "distorch",
            "unquoted CQL names are case-insensitive"
        );
        assert_eq!((url.credentials, url.replication_factor), (None, 1));

        let url = ScyllaUrl::parse("scylla://[::1]:19042,[fe80::1]/ks").unwrap();
        assert_eq!(url.nodes, ["[::1]:19042", "[fe80::1]:9042"]);
    }

    #[test]
    fn parses_credentials_and_replication() {
        let url = ScyllaUrl::parse("scylla://app:s3:cr@t@db:9042/ks?replication_factor=3").unwrap();
        assert_eq!(
            url.credentials,
            Some(("app".to_owned(), "s3:cr@t".to_owned()))
        );
        assert_eq!(url.nodes, ["db:9042"]);
        assert_eq!(url.replication_factor, 3);
    }

    #[test]
    fn rejects_what_it_cannot_use_with_a_config_error() {
        for url in [
            "kafka://db:9042/ks",
            "scylla://db:9042",
            "scylla://db:9042/",
            "scylla://db:9042/1ks",
            "scylla://db:9042/ks;DROP",
            "scylla://db:9042/my-ks",
            "scylla://,db/ks",
            "scylla://db:0/ks",
            "scylla://db:99999/ks",
            "scylla://db:/ks",
            "scylla://user@db/ks",
            "scylla://db/ks?replication_factor=0",
            "scylla://db/ks?replication_factor=x",
            "scylla://db/ks?consistency=one",
        ] {
            let err = ScyllaUrl::parse(url).expect_err(url);
            assert!(matches!(err, StoreError::Setup(_)), "{url}: {err:?}");
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn messages_never_show_the_password() {
        let err = ScyllaUrl::parse("scylla://app:hunter2@db:9042/1bad").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("app:***@db"), "{text}");
        assert_eq!(redact("scylla://db/ks"), "scylla://db/ks");
    }
}
