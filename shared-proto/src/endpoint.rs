//! A STOMP listener's address as lockd's `listen` and brokerd's `--listen` take it:
//! `HOST:PORT` or `tcp://HOST:PORT` (also `stomp://`) for STOMP in the clear, `ssl://HOST:PORT`
//! (also `stomp+ssl://`, ActiveMQ's name) for STOMP over TLS. One parser, so that lockd
//! refuses at start exactly what brokerd would refuse at activation.

use std::str::FromStr;

/// How clients talk to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// STOMP in the clear: `tcp://HOST:PORT` or a bare `HOST:PORT`.
    Tcp,
    /// STOMP inside TLS: `ssl://HOST:PORT` (ActiveMQ's `stomp+ssl`).
    Ssl,
}

/// One `--listen` value: where to listen and how clients talk there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub transport: Transport,
    /// `HOST:PORT`, without the scheme.
    pub addr: String,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let (transport, addr) = match spec.split_once("://") {
            None => (Transport::Tcp, spec),
            Some(("tcp" | "stomp", addr)) => (Transport::Tcp, addr),
            Some(("ssl" | "stomp+ssl", addr)) => (Transport::Ssl, addr),
            Some((scheme, _)) => {
                return Err(format!(
                    "{spec:?}: unknown scheme {scheme:?}; use HOST:PORT, tcp://HOST:PORT or \
                     ssl://HOST:PORT"
                ))
            }
        };
        if addr.is_empty() || !addr.contains(':') {
            return Err(format!(
                "{spec:?} is not HOST:PORT, tcp://HOST:PORT or ssl://HOST:PORT"
            ));
        }
        Ok(Endpoint {
            transport,
            addr: addr.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_their_transports() {
        for (spec, transport, addr) in [
            ("127.0.0.1:61613", Transport::Tcp, "127.0.0.1:61613"),
            ("tcp://0.0.0.0:1", Transport::Tcp, "0.0.0.0:1"),
            ("stomp://[::1]:2", Transport::Tcp, "[::1]:2"),
            ("ssl://localhost:3", Transport::Ssl, "localhost:3"),
            ("stomp+ssl://h:4", Transport::Ssl, "h:4"),
        ] {
            let endpoint: Endpoint = spec.parse().unwrap();
            assert_eq!(
                (endpoint.transport, endpoint.addr.as_str()),
                (transport, addr)
            );
        }
    }

    #[test]
    fn mistakes_name_the_forms() {
        let unknown = "udp://h:1".parse::<Endpoint>().unwrap_err();
        assert!(unknown.contains("unknown scheme \"udp\""), "{unknown}");
        for bad in ["", "ssl://", "61613", "tcp://host"] {
            let err = bad.parse::<Endpoint>().unwrap_err();
            assert!(err.contains("is not HOST:PORT"), "{bad}: {err}");
        }
    }
}
