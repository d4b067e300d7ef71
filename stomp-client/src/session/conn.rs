//! One STOMP connection of a session: connecting to one address (TCP or TLS, CONNECT and its
//! CONNECTED), the order addresses are tried in, and the connection's buffers and versions.

use super::*;

/// One established STOMP connection.
pub(crate) struct Conn {
    pub address: Address,
    /// Negotiated version: 10, 11 or 12.
    pub version: u8,
    pub(super) read: ReadHalf,
    pub(super) write: WriteHalf,
    /// What was read and not yet taken as frames.
    pub(super) rbuf: BytesMut,
    /// The frame being read from `rbuf`, parsed as far as it has arrived.
    decoder: Decoder,
    /// Frames encoded and not yet written.
    pub(super) wbuf: BytesMut,
    /// The negotiated heart-beats: how often we must send, how often the broker will.
    pub(super) send_every: Option<Duration>,
    pub(super) expect_every: Option<Duration>,
}

impl Conn {
    /// The version frames are written in.
    fn writing(&self) -> Version {
        match self.version {
            10 => Version::V1_0,
            11 => Version::V1_1,
            _ => Version::V1_2,
        }
    }

    /// The version frames are read in: leniently, 1.2's escapes from a 1.1 broker too.
    fn reading(&self) -> Version {
        match self.version {
            10 => Version::V1_0,
            _ => Version::V1_2,
        }
    }

    /// Takes the next whole frame off the read buffer (heart-beat EOLs before it dropped),
    /// going on from where the last read left the parse: a frame arriving in many reads is
    /// parsed once, not again on each.
    pub(super) fn next_frame(&mut self, limits: &Limits) -> Result<Option<Frame>, FrameError> {
        let version = self.reading();
        (self.decoder)
            .next_frame(&mut self.rbuf, limits, version)
            .map_err(|refused| refused.error)
    }

    /// Encodes a frame into the write buffer, in the connection's version.
    pub(super) fn put<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        command: &str,
        headers: impl IntoIterator<Item = (K, V)>,
        body: &[u8],
    ) {
        let version = self.writing();
        frame::encode(&mut self.wbuf, command, headers, body, version);
    }
}

/// Why one connection attempt failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Nothing answered CONNECT (refused, reset, timeout, garbage).
    Unreachable(String),
    /// A broker answered CONNECT with ERROR (bad credentials, ...).
    Refused(String),
}

/// TCP connect (and for `ssl://`, the TLS handshake with `tls`), CONNECT, wait for CONNECTED;
/// all within `options.connect_timeout`.
pub(crate) async fn connect_once(
    address: &Address,
    options: &Options,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Conn, ConnectError> {
    let attempt = async {
        let tls = if address.tls { tls } else { None };
        let (read, write) = transport::open(&address.host, address.port, tls)
            .await
            .map_err(|e| ConnectError::Unreachable(format!("connect: {e}")))?;
        let mut conn = Conn {
            address: address.clone(),
            version: 10,
            read,
            write,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            decoder: Decoder::default(),
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            send_every: None,
            expect_every: None,
        };
        let hb = &options.heart_beat;
        let heart_beat = format!("{},{}", hb.send.as_millis(), hb.receive.as_millis());
        let host = options.virtual_host.as_deref().unwrap_or(&address.host);
        let mut headers = vec![
            ("accept-version", "1.0,1.1,1.2"),
            ("host", host),
            ("heart-beat", heart_beat.as_str()),
        ];
        if let Some(login) = &options.login {
            headers.push(("login", login));
        }
        if let Some(passcode) = &options.passcode {
            headers.push(("passcode", passcode));
        }
        headers.extend(options.connect_headers.iter().map(pair));
        conn.put("CONNECT", headers, b"");
        let io = |e: std::io::Error| ConnectError::Unreachable(e.to_string());
        conn.write.write_all(&conn.wbuf).await.map_err(io)?;
        conn.write.flush().await.map_err(io)?;
        conn.wbuf.clear();
        let reply = loop {
            match conn.next_frame(&options.limits) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(e) => return Err(ConnectError::Unreachable(e.to_string())),
            }
            conn.rbuf.reserve(READ_CHUNK);
            if conn.read.read_buf(&mut conn.rbuf).await.map_err(io)? == 0 {
                return Err(ConnectError::Unreachable(
                    "connection closed before CONNECTED".into(),
                ));
            }
        };
        match reply.command.as_str() {
            "CONNECTED" => {
                conn.version = match reply.get("version") {
                    Some("1.2") => 12,
                    Some("1.1") => 11,
                    _ => 10,
                };
                let (sx, sy) = parse_heart_beat(reply.get("heart-beat"));
                let (cx, cy) = (hb.send, hb.receive);
                // STOMP 1.1+: each side's period is the larger of what one offers and the
                // other wants, and zero on either side switches that direction off.
                if conn.version >= 11 {
                    if !cx.is_zero() && !sy.is_zero() {
                        conn.send_every = Some(cx.max(sy));
                    }
                    if !cy.is_zero() && !sx.is_zero() {
                        conn.expect_every = Some(cy.max(sx));
                    }
                }
                Ok(conn)
            }
            "ERROR" => Err(ConnectError::Refused(error_text(&reply))),
            other => Err(ConnectError::Unreachable(format!(
                "expected CONNECTED, got {other}"
            ))),
        }
    };
    match tokio::time::timeout(options.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Unreachable(format!(
            "no CONNECTED within {:?}",
            options.connect_timeout
        ))),
    }
}

fn parse_heart_beat(value: Option<&str>) -> (Duration, Duration) {
    let mut parts = value
        .unwrap_or("0,0")
        .split(',')
        .map(|p| Duration::from_millis(p.trim().parse::<u64>().unwrap_or(0)));
    let sx = parts.next().unwrap_or_default();
    let sy = parts.next().unwrap_or_default();
    (sx, sy)
}

/// Address order for one pass: shuffled when `randomize`, with the address that failed last
/// moved to the end (ActiveMQ does the same).
pub(crate) fn pass_order(
    addresses: &[Address],
    randomize: bool,
    rng: &mut u64,
    last_failed: Option<&Address>,
) -> Vec<Address> {
    let mut order = addresses.to_vec();
    if randomize {
        for i in (1..order.len()).rev() {
            // xorshift64: good enough to spread clients over brokers.
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            order.swap(i, (*rng % (i as u64 + 1)) as usize);
        }
    }
    if let Some(failed) = last_failed {
        if let Some(pos) = order.iter().position(|a| a == failed) {
            let a = order.remove(pos);
            order.push(a);
        }
    }
    order
}

/// Passes over the address list until one accepts CONNECT, pausing between passes as the
/// policy says. At startup, a broker that answers CONNECT with ERROR ends the attempt at once:
/// it is up and refuses us, and retrying will not change its mind. `tls` serves the `ssl://`
/// addresses.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn establish(
    addresses: &[Address],
    tls: Option<&Arc<ClientConfig>>,
    policy: &ReconnectPolicy,
    options: &Options,
    backoff: &mut Backoff,
    rng: &mut u64,
    last_failed: &mut Option<Address>,
    startup: bool,
) -> Result<Conn, Error> {
    loop {
        let order = pass_order(addresses, policy.randomize, rng, last_failed.as_ref());
        let mut last_error = String::new();
        for address in &order {
            match connect_once(address, options, tls).await {
                Ok(conn) => return Ok(conn),
                Err(ConnectError::Refused(message)) if startup => {
                    return Err(Error::Refused {
                        address: address.to_string(),
                        message,
                    })
                }
                Err(ConnectError::Refused(e)) | Err(ConnectError::Unreachable(e)) => {
                    tracing::debug!(%address, error = %e, "connect attempt failed");
                    last_error = format!("{address}: {e}");
                    *last_failed = Some(address.clone());
                }
            }
        }
        let Some(pause) = backoff.failed() else {
            return Err(Error::GaveUp {
                passes: backoff.failures(),
                last: last_error,
            });
        };
        let failures = backoff.failures();
        if policy.warn_after_attempts > 0 && failures.is_multiple_of(policy.warn_after_attempts) {
            tracing::warn!(failures, next_in = ?pause, error = %last_error, "still no broker");
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        let (host, port) = s.split_once(':').unwrap();
        Address {
            host: host.into(),
            port: port.parse().unwrap(),
            tls: false,
        }
    }

    #[test]
    fn pass_order_keeps_the_written_order_and_tries_the_failed_address_last() {
        let list = [a("a:1"), a("b:2"), a("c:3")];
        let mut rng = 1;
        assert_eq!(pass_order(&list, false, &mut rng, None), list);
        assert_eq!(
            pass_order(&list, false, &mut rng, Some(&a("a:1"))),
            [a("b:2"), a("c:3"), a("a:1")]
        );
        let mut seen = HashSet::new();
        for _ in 0..50 {
            let order = pass_order(&list, true, &mut rng, None);
            assert_eq!(order.len(), 3);
            seen.insert(order[0].clone());
        }
        assert_eq!(seen.len(), 3, "randomize spreads the first choice");
    }

    #[test]
    fn heart_beat_header_parses_leniently() {
        assert_eq!(
            parse_heart_beat(Some("100,200")),
            (Duration::from_millis(100), Duration::from_millis(200))
        );
        assert_eq!(parse_heart_beat(None), (Duration::ZERO, Duration::ZERO));
        assert_eq!(
            parse_heart_beat(Some("x")),
            (Duration::ZERO, Duration::ZERO)
        );
    }
}
