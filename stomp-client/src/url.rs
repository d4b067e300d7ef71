//! Broker addresses in ActiveMQ's failover URL syntax, and the reconnect policy its options set.
//!
//! Accepted spellings: `failover:(tcp://h1:61613,tcp://h2:61613)?opt=value&...`,
//! `failover:tcp://h1:61613,tcp://h2:61613`, a bare `tcp://h:p`, `h:p`, and a comma list of
//! either. Schemes `tcp`, `stomp` and `stomp+nio` are plain STOMP over TCP; `ssl` and
//! `stomp+ssl` are STOMP over TLS (the CA file and a client certificate are in
//! [`crate::TlsOptions`]), and may be mixed with plain addresses in one list. Options and their
//! defaults are ActiveMQ Classic's (5.6 and later), with one consequence worth knowing:
//! **`randomize` defaults to true**, so with several addresses the first one tried is random;
//! pass `randomize=false` to try them in the order written. Unknown options, and ActiveMQ
//! options this client does not implement, are errors that name the option.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Why a URL could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("no broker address in {0:?}")]
    Empty(String),
    #[error("bad broker address {0:?}: expected host:port, tcp://host:port or ssl://host:port")]
    Address(String),
    #[error("unsupported scheme {scheme:?} in {address:?}: this client speaks STOMP over TCP (tcp://, stomp://) and over TLS (ssl://)")]
    Scheme { scheme: String, address: String },
    #[error("unknown failover option {0:?} (known: initialReconnectDelay, maxReconnectDelay, useExponentialBackOff, backOffMultiplier, randomize, maxReconnectAttempts, startupMaxReconnectAttempts, timeout, warnAfterReconnectAttempts)")]
    UnknownOption(String),
    #[error("failover option {0:?} is an ActiveMQ option this client does not implement")]
    UnsupportedOption(String),
    #[error("option {option:?} of {address:?}: this client takes no transport options")]
    TransportOption { option: String, address: String },
    #[error("bad value {value:?} for failover option {option}: {expected}")]
    Value {
        option: String,
        value: String,
        expected: &'static str,
    },
    #[error("unbalanced parentheses in {0:?}")]
    Parentheses(String),
}

/// One broker address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub host: String,
    pub port: u16,
    /// `ssl://`: STOMP over TLS; the broker's certificate must name `host`.
    pub tls: bool,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("ssl://")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the client reconnects: ActiveMQ's failover transport options.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// `initialReconnectDelay` (ms, default 10): the pause after the first failed pass over the
    /// address list. The first pass after a lost connection starts at once.
    pub initial_delay: Duration,
    /// `maxReconnectDelay` (ms, default 30000): the longest pause between passes.
    pub max_delay: Duration,
    /// `useExponentialBackOff` (default true): multiply the pause after every failed pass.
    pub exponential: bool,
    /// `backOffMultiplier` (default 2.0).
    pub multiplier: f64,
    /// `randomize` (default true, as in ActiveMQ): shuffle the address list before each pass.
    pub randomize: bool,
    /// `maxReconnectAttempts` (default -1 = forever): failed passes over the list after which
    /// a lost connection is given up. 0 means one pass only.
    pub max_attempts: Option<u32>,
    /// `startupMaxReconnectAttempts` (default -1): the same for the very first connection;
    /// when -1, `maxReconnectAttempts` applies at startup too (ActiveMQ's rule).
    pub startup_max_attempts: Option<u32>,
    /// `timeout` (ms, default -1 = none): how long a send may wait for a connection and a free
    /// slot in the receipt window before it fails; reconnecting goes on regardless.
    pub send_timeout: Option<Duration>,
    /// `warnAfterReconnectAttempts` (default 10, 0 = never): log a warning every this many
    /// failed passes.
    pub warn_after_attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(30_000),
            exponential: true,
            multiplier: 2.0,
            randomize: true,
            max_attempts: None,
            startup_max_attempts: None,
            send_timeout: None,
            warn_after_attempts: 10,
        }
    }
}

impl ReconnectPolicy {
    /// The limit on failed passes that applies now.
    pub fn attempt_limit(&self, startup: bool) -> Option<u32> {
        match (startup, self.startup_max_attempts) {
            (true, Some(n)) => Some(n),
            _ => self.max_attempts,
        }
    }
}

/// A parsed failover URL: the addresses in the order written, and the reconnect policy.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverUrl {
    pub addresses: Vec<Address>,
    pub reconnect: ReconnectPolicy,
}

/// ActiveMQ failover options that exist but are not implemented here.
const UNSUPPORTED: &[&str] = &[
    "backup",
    "backupPoolSize",
    "priorityBackup",
    "priorityURIs",
    "updateURIsSupported",
    "updateURIsURL",
    "rebalanceUpdateURIs",
    "reconnectSupported",
    "nested",
    "maxCacheSize",
    "trackMessages",
    "trackTransactionProducers",
    "reconnectDelayExponent",
];

impl FromStr for FailoverUrl {
    type Err = UrlError;

    fn from_str(spec: &str) -> Result<Self, UrlError> {
        let s = spec.trim();
        let (list, query) = match s.strip_prefix("failover:") {
            Some(rest) => {
                let rest = rest.trim();
                if let Some(inner) = rest.strip_prefix('(') {
                    let close = inner
                        .rfind(')')
                        .ok_or_else(|| UrlError::Parentheses(spec.to_string()))?;
                    let after = &inner[close + 1..];
                    let query = match after.strip_prefix('?') {
                        Some(q) => Some(q),
                        None if after.is_empty() => None,
                        None => return Err(UrlError::Parentheses(spec.to_string())),
                    };
                    (&inner[..close], query)
                } else {
                    // Without parentheses a `?` belongs to the failover URL, as in ActiveMQ.
                    match rest.split_once('?') {
                        Some((list, query)) => (list, Some(query)),
                        None => (rest, None),
                    }
                }
            }
            None => (s, None),
        };
        let mut addresses = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            addresses.push(parse_address(part)?);
        }
        if addresses.is_empty() {
            return Err(UrlError::Empty(spec.to_string()));
        }
        let mut reconnect = ReconnectPolicy::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            apply_option(&mut reconnect, name, value)?;
        }
        Ok(FailoverUrl {
            addresses,
            reconnect,
        })
    }
}

fn parse_address(part: &str) -> Result<Address, UrlError> {
    let bad = || UrlError::Address(part.to_string());
    let (tls, rest) = match part.split_once("://") {
        Some(("tcp" | "stomp" | "stomp+nio" | "nio", rest)) => (false, rest),
        Some(("ssl" | "stomp+ssl", rest)) => (true, rest),
        Some((scheme, _)) => {
            return Err(UrlError::Scheme {
                scheme: scheme.to_string(),
                address: part.to_string(),
            })
        }
        None => (false, part),
    };
    let (hostport, query) = match rest.split_once('?') {
        Some((hp, q)) => (hp, Some(q)),
        None => (rest, None),
    };
    if let Some(option) = query
        .unwrap_or("")
        .split('&')
        .find(|p| !p.is_empty())
        .map(|p| p.split('=').next().unwrap_or(p))
    {
        return Err(UrlError::TransportOption {
            option: option.to_string(),
            address: part.to_string(),
        });
    }
    let hostport = hostport.strip_suffix('/').unwrap_or(hostport);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, port) = v6.split_once("]:").ok_or_else(bad)?;
        (host, port)
    } else {
        hostport.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    let port = port.parse::<u16>().map_err(|_| bad())?;
    Ok(Address {
        host: host.to_string(),
        port,
        tls,
    })
}

fn apply_option(p: &mut ReconnectPolicy, name: &str, value: &str) -> Result<(), UrlError> {
    let err = |expected| UrlError::Value {
        option: name.to_string(),
        value: value.to_string(),
        expected,
    };
    let millis = || value.parse::<u64>().map(Duration::from_millis);
    let boolean = || match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(err("true or false")),
    };
    // -1 means no limit; any other negative number is a mistake.
    let limit = || match value.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(n) if (0..=u32::MAX as i64).contains(&n) => Ok(Some(n as u32)),
        _ => Err(err("-1 (no limit) or a count >= 0")),
    };
    match name {
        "initialReconnectDelay" => {
            p.initial_delay = millis().map_err(|_| err("milliseconds >= 0"))?
        }
        "maxReconnectDelay" => p.max_delay = millis().map_err(|_| err("milliseconds >= 0"))?,
        "useExponentialBackOff" => p.exponential = boolean()?,
        "backOffMultiplier" => {
            p.multiplier = value
                .parse::<f64>()
                .ok()
                .filter(|m| m.is_finite() && *m >= 1.0)
                .ok_or_else(|| err("a number >= 1"))?
        }
        "randomize" => p.randomize = boolean()?,
        "maxReconnectAttempts" => p.max_attempts = limit()?,
        "startupMaxReconnectAttempts" => p.startup_max_attempts = limit()?,
        "timeout" => {
            p.send_timeout = match value.parse::<i64>() {
                Ok(n) if n < 0 => None,
                Ok(n) => Some(Duration::from_millis(n as u64)),
                Err(_) => return Err(err("milliseconds, or -1 for none")),
            }
        }
        "warnAfterReconnectAttempts" => {
            p.warn_after_attempts = value.parse().map_err(|_| err("a count >= 0"))?
        }
        other if UNSUPPORTED.contains(&other) || other.starts_with("nested.") => {
            return Err(UrlError::UnsupportedOption(other.to_string()))
        }
        other => return Err(UrlError::UnknownOption(other.to_string())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(url: &FailoverUrl) -> Vec<String> {
        url.addresses.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_issue_example_parses_with_every_option() {
        let url: FailoverUrl = "failover:(tcp://h1:61613,tcp://h2:61613)?initialReconnectDelay=10&maxReconnectDelay=30000&useExponentialBackOff=true&backOffMultiplier=2&randomize=false&maxReconnectAttempts=-1&startupMaxReconnectAttempts=3&timeout=500&warnAfterReconnectAttempts=0"
            .parse()
            .unwrap();
        assert_eq!(addrs(&url), ["h1:61613", "h2:61613"]);
        let p = &url.reconnect;
        assert_eq!(p.initial_delay, Duration::from_millis(10));
        assert_eq!(p.max_delay, Duration::from_millis(30_000));
        assert!(p.exponential);
        assert_eq!(p.multiplier, 2.0);
        assert!(!p.randomize);
        assert_eq!(p.max_attempts, None);
        assert_eq!(p.startup_max_attempts, Some(3));
        assert_eq!(p.send_timeout, Some(Duration::from_millis(500)));
        assert_eq!(p.warn_after_attempts, 0);
        assert_eq!(p.attempt_limit(true), Some(3));
        assert_eq!(p.attempt_limit(false), None);
    }

    #[test]
    fn defaults_are_activemqs() {
        let url: FailoverUrl = "failover:(tcp://127.0.0.1:61613)".parse().unwrap();
        assert_eq!(url.reconnect, ReconnectPolicy::default());
        assert!(url.reconnect.randomize, "ActiveMQ randomizes by default");
        assert_eq!(url.reconnect.attempt_limit(true), None);
    }

    #[test]
    fn bare_addresses_and_lists() {
        for (spec, want) in [
            ("tcp://h:1", vec!["h:1"]),
            ("h:1", vec!["h:1"]),
            (" a:1 , stomp://b:2 ", vec!["a:1", "b:2"]),
            (
                "failover:tcp://a:1,tcp://b:2?randomize=false",
                vec!["a:1", "b:2"],
            ),
            ("tcp://[::1]:61613", vec!["[::1]:61613"]),
            ("failover:(a:1)", vec!["a:1"]),
            (
                "failover:(ssl://a:1,tcp://b:2,stomp+ssl://c:3)",
                vec!["ssl://a:1", "b:2", "ssl://c:3"],
            ),
        ] {
            let url: FailoverUrl = spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(addrs(&url), want, "{spec}");
        }
        let url: FailoverUrl = "failover:tcp://a:1,tcp://b:2?randomize=false"
            .parse()
            .unwrap();
        assert!(!url.reconnect.randomize);
        assert_eq!(url.addresses[1].host, "b");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let err = |spec: &str| spec.parse::<FailoverUrl>().unwrap_err().to_string();
        assert!(err("failover:(tcp://a:1)?randomise=false").contains("\"randomise\""));
        assert!(err("failover:(tcp://a:1)?backup=true").contains("does not implement"));
        assert!(
            err("failover:(tcp://a:1)?maxReconnectAttempts=-2").contains("maxReconnectAttempts")
        );
        assert!(err("failover:(tcp://a:1)?randomize=yes").contains("true or false"));
        assert!(err("tcp://a:1?wireFormat.maxInactivityDuration=0").contains("wireFormat"));
        assert!(err("udp://a:1").contains("\"udp\""));
        assert!(err("a").contains("expected host:port"));
        assert!(err("a:notaport").contains("expected host:port"));
        assert!(err("failover:()").contains("no broker address"));
        assert!(err("").contains("no broker address"));
        assert!(err("failover:(tcp://a:1").contains("parentheses"));
    }
}
