//! The broker core's rules, driven request by request without sockets or a store.

use super::*;
use crate::journal::Op;
use message::Published;

mod commits;
mod consumer_options;
mod created_destinations;
mod dead_letters;
mod dispatch_acks;
mod draining;
mod durable_subscriptions;
mod memory_limit;
mod paged;
mod refusals;
mod virtual_topics;

struct Client {
    conn: ConnId,
    outbox: mpsc::UnboundedReceiver<Outbound>,
}

/// Node n1 of `epoch`, with a topic backlog of 3, 4 subscriptions per connection, 8
/// destinations in memory and 64 created ones at most.
fn settings(epoch: u64, max_redeliveries: u32) -> Settings {
    Settings {
        node: "n1".into(),
        epoch,
        redelivery: redelivery::RedeliveryPolicy {
            max_redeliveries,
            dead_letter_queue: "/queue/DLQ".into(),
            ..Default::default()
        },
        topic_backlog: pending::BacklogLimit {
            messages: 3,
            bytes: usize::MAX,
        },
        caps: limits::Caps {
            subscriptions_per_connection: 4,
            destinations: 8,
            created_destinations: 64,
        },
        remember_created: true,
    }
}

fn broker() -> Broker {
    Broker::new(settings(7, 2), Box::new(Volatile))
}

fn open(broker: &mut Broker, conn: ConnId, client_id: Option<&str>) -> Client {
    let (outbox, rx) = mpsc::unbounded_channel();
    let (verdict, mut answer) = oneshot::channel();
    broker.handle(Request::Open(Opening {
        conn,
        session: format!("n1-7-{conn}"),
        client_id: client_id.map(str::to_owned),
        peer: format!("127.0.0.1:{conn}"),
        access: None,
        outbox,
        verdict,
    }));
    assert_eq!(answer.try_recv(), Ok(Ok(())), "connection {conn} refused");
    Client { conn, outbox: rx }
}

fn send(
    broker: &mut Broker,
    client: &Client,
    destination: &str,
    body: &str,
    extra: &[(&str, &str)],
) {
    let mut headers = vec![("destination".to_string(), destination.to_string())];
    headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let transaction = extra
        .iter()
        .find(|(n, _)| *n == "transaction")
        .map(|(_, v)| v.to_string());
    broker.handle(Request::Send {
        conn: client.conn,
        published: Published::from_headers(&headers).unwrap(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        transaction,
        receipt: None,
    });
}

fn subscribe(
    broker: &mut Broker,
    client: &Client,
    id: &str,
    destination: &str,
    ack: AckMode,
    prefetch: u32,
) {
    subscribe_with(
        broker,
        client,
        id,
        destination,
        ack,
        prefetch,
        Default::default(),
    );
}

/// [`subscribe`] with consumer options.
fn subscribe_with(
    broker: &mut Broker,
    client: &Client,
    id: &str,
    destination: &str,
    ack: AckMode,
    prefetch: u32,
    options: consumers::ConsumerOptions,
) {
    broker.handle(Request::Subscribe {
        conn: client.conn,
        spec: SubscribeSpec {
            id: id.into(),
            destination: destination.into(),
            ack,
            prefetch,
            durable_name: None,
            browser: false,
            options,
        },
        receipt: None,
    });
}

/// (body, ack, redelivered) of every MESSAGE waiting in the outbox; panics on an ERROR.
fn received(client: &mut Client) -> Vec<(String, Option<String>, bool)> {
    let mut out = Vec::new();
    while let Ok(frame) = client.outbox.try_recv() {
        match frame {
            Outbound::Message { ack, msg, .. } => out.push((
                String::from_utf8_lossy(&msg.body).into_owned(),
                ack.map(|a| a.to_string()),
                msg.redeliveries > 0,
            )),
            Outbound::Receipt(_) | Outbound::BrowseEnd { .. } => {}
            Outbound::Error { message, .. } | Outbound::Warning { message, .. } => {
                panic!("unexpected ERROR: {message}")
            }
        }
    }
    out
}

fn bodies(client: &mut Client) -> Vec<String> {
    received(client).into_iter().map(|(b, _, _)| b).collect()
}

/// (body, redelivered) of every MESSAGE waiting in the outbox; panics on an ERROR.
fn flags(client: &mut Client) -> Vec<(String, bool)> {
    received(client)
        .into_iter()
        .map(|(b, _, r)| (b, r))
        .collect()
}

/// `expected` as [`flags`] returns it.
fn flagged(expected: &[(&str, bool)]) -> Vec<(String, bool)> {
    expected.iter().map(|(b, r)| (b.to_string(), *r)).collect()
}

/// The session reports `count` auto-mode messages of its subscription `id` written to its
/// socket.
fn written(broker: &mut Broker, client: &Client, id: &str, count: u32) {
    let sub = broker.connections[&client.conn].subscriptions[id];
    broker.handle(Request::Written {
        conn: client.conn,
        sub,
        count,
    });
}

fn ack(broker: &mut Broker, client: &Client, id: &str, nack: bool) {
    broker.handle(Request::Ack {
        conn: client.conn,
        which: AckRef::Ack(id.into()),
        nack,
        transaction: None,
        receipt: None,
    });
}

/// Everything in `client`'s outbox: receipt ids, and ERROR messages with their receipt-id.
fn answers(client: &mut Client) -> (Vec<String>, Vec<(String, Option<String>)>) {
    let (mut receipts, mut errors) = (Vec::new(), Vec::new());
    while let Ok(frame) = client.outbox.try_recv() {
        match frame {
            Outbound::Receipt(r) => receipts.push(r),
            Outbound::Error { message, receipt } | Outbound::Warning { message, receipt } => {
                errors.push((message, receipt))
            }
            Outbound::Message { .. } | Outbound::BrowseEnd { .. } => {}
        }
    }
    (receipts, errors)
}

fn request_with_receipt(b: &mut Broker, client: &Client, kind: &str, tx: &str, receipt: &str) {
    let (conn, transaction, receipt) = (client.conn, tx.to_string(), Some(receipt.to_string()));
    b.handle(match kind {
        "BEGIN" => Request::Begin {
            conn,
            transaction,
            receipt,
        },
        "COMMIT" => Request::Commit {
            conn,
            transaction,
            receipt,
        },
        _ => unreachable!("{kind}"),
    });
}

/// A store in memory that keeps what the broker writes and serves its page reads, so paging is
/// tested without sled. Its barrier runs at once, like [`Volatile`]'s.
#[derive(Clone, Default)]
struct MapStore(Arc<std::sync::Mutex<Stored>>);

/// (space, key) -> value, in the store's order.
type Stored = std::collections::BTreeMap<(String, Vec<u8>), Bytes>;

impl MapStore {
    fn map(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.0.lock().unwrap()
    }

    /// How many entries `space` holds.
    fn count(&self, space: &str) -> usize {
        self.map().keys().filter(|(s, _)| s == space).count()
    }

    /// How many entries the durable subscriptions' spaces hold, whatever their incarnations.
    fn count_durable(&self) -> usize {
        self.map()
            .keys()
            .filter(|(s, _)| s.starts_with("s/") || s.starts_with("d/"))
            .count()
    }
}

impl Durability for MapStore {
    fn put(&self, space: Arc<str>, key: Bytes, value: Value, on_durable: Option<OnDurable>) {
        let value = value.to_bytes();
        self.map().insert((space.to_string(), key.to_vec()), value);
        if let Some(done) = on_durable {
            done();
        }
    }
    fn remove(&self, space: Arc<str>, key: Bytes) {
        self.map().remove(&(space.to_string(), key.to_vec()));
    }
    fn barrier(&self, on_durable: OnDurable) {
        on_durable();
    }
    fn apply(&self, ops: Vec<Op>, on_durable: Option<OnDurable>) {
        for op in ops {
            match op {
                Op::Put { space, key, value } => self.put(space, key, value, None),
                Op::Remove { space, key } => self.remove(space, key),
            }
        }
        if let Some(done) = on_durable {
            done();
        }
    }
}

impl PageStore for MapStore {
    fn spaces(&self) -> Result<Vec<Arc<str>>, StoreError> {
        let mut spaces: Vec<Arc<str>> = self.map().keys().map(|(s, _)| s.as_str().into()).collect();
        spaces.dedup();
        Ok(spaces)
    }
    fn read(&self, space: &str, from: &[u8], limit: usize) -> Result<paging::Entries, StoreError> {
        Ok(self
            .map()
            .range((space.to_string(), from.to_vec())..)
            .take_while(|((s, _), _)| s == space)
            .take(limit)
            .map(|((_, k), v)| (Bytes::copy_from_slice(k), v.clone()))
            .collect())
    }
}

/// A broker of `epoch` on `store` that keeps `page` waiting messages per space in memory.
fn paged_broker(
    store: &MapStore,
    epoch: u64,
    page: usize,
) -> (Broker, mpsc::UnboundedReceiver<PageRead>) {
    let mut b = Broker::new(settings(epoch, 5), Box::new(store.clone()));
    let reads = b.page_out(page);
    (b, reads)
}

/// Serves every page read the broker asked for; returns how many.
fn serve(b: &mut Broker, reads: &mut mpsc::UnboundedReceiver<PageRead>, store: &MapStore) -> usize {
    let mut served = 0;
    while let Ok(read) = reads.try_recv() {
        b.handle(read.serve(store));
        served += 1;
    }
    served
}

/// Receives, and acknowledges one by one, until nothing more comes: (body, redelivered).
fn drain_acking(
    b: &mut Broker,
    reads: &mut mpsc::UnboundedReceiver<PageRead>,
    store: &MapStore,
    client: &mut Client,
) -> Vec<(String, bool)> {
    let mut got = Vec::new();
    loop {
        let batch = received(client);
        let served = serve(b, reads, store);
        if batch.is_empty() && served == 0 {
            return got;
        }
        for (body, ack, redelivered) in batch {
            ack_now(b, client, &ack.expect("client-individual"));
            got.push((body, redelivered));
        }
    }
}

fn ack_now(b: &mut Broker, client: &Client, id: &str) {
    ack(b, client, id, false);
}

fn persistent_sends(
    b: &mut Broker,
    producer: &Client,
    destination: &str,
    range: std::ops::Range<u32>,
) {
    for i in range {
        send(
            b,
            producer,
            destination,
            &i.to_string(),
            &[("persistent", "true")],
        );
    }
}

fn numbers(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

fn ack_nack(b: &mut Broker, client: &Client, id: &str) {
    ack(b, client, id, true);
}

/// A store whose writes become durable only when the test says so.
#[derive(Clone, Default)]
struct HeldStore(Arc<std::sync::Mutex<Vec<OnDurable>>>);

impl HeldStore {
    /// Makes everything written so far durable.
    fn release(&self) {
        let held = std::mem::take(&mut *self.0.lock().unwrap());
        for done in held {
            done();
        }
    }

    fn hold(&self, on_durable: Option<OnDurable>) {
        self.0.lock().unwrap().extend(on_durable);
    }
}

impl Durability for HeldStore {
    fn put(&self, _: Arc<str>, _: Bytes, _: Value, on_durable: Option<OnDurable>) {
        self.hold(on_durable);
    }
    fn remove(&self, _: Arc<str>, _: Bytes) {}
    fn barrier(&self, on_durable: OnDurable) {
        self.hold(Some(on_durable));
    }
    fn apply(&self, _: Vec<Op>, on_durable: Option<OnDurable>) {
        self.hold(on_durable);
    }
}

fn subscribe_durable(
    b: &mut Broker,
    client: &Client,
    id: &str,
    topic: &str,
    receipt: Option<&str>,
) {
    b.handle(Request::Subscribe {
        conn: client.conn,
        spec: SubscribeSpec {
            id: id.into(),
            destination: topic.into(),
            ack: AckMode::ClientIndividual,
            prefetch: 1,
            durable_name: Some("feed".into()),
            browser: false,
            options: Default::default(),
        },
        receipt: receipt.map(str::to_owned),
    });
}

fn unsubscribe(b: &mut Broker, client: &Client, id: &str) {
    b.handle(Request::Unsubscribe {
        conn: client.conn,
        id: id.into(),
        durable_name: None,
        receipt: None,
    });
}

/// The message of the ERROR waiting in `client`'s outbox.
fn refusal(client: &mut Client) -> String {
    match client.outbox.try_recv() {
        Ok(Outbound::Error { message, .. }) => message,
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

/// A broker without paging on `store`, with [`broker`]'s settings.
fn stored_broker(store: &MapStore) -> Broker {
    Broker::new(settings(7, 2), Box::new(store.clone()))
}

/// Whether `client` got the receipt `id` (skipping messages).
fn got_receipt(client: &mut Client, id: &str) -> bool {
    std::iter::from_fn(|| client.outbox.try_recv().ok())
        .any(|frame| matches!(frame, Outbound::Receipt(r) if r == id))
}

/// Subscribes `client` to the durable subscription `name` of `/topic/news`, as subscription "d".
fn subscribe_durable_named(b: &mut Broker, client: &Client, name: &str) {
    b.handle(Request::Subscribe {
        conn: client.conn,
        spec: SubscribeSpec {
            id: "d".into(),
            destination: "/topic/news".into(),
            ack: AckMode::ClientIndividual,
            prefetch: 2,
            durable_name: Some(name.into()),
            browser: false,
            options: Default::default(),
        },
        receipt: None,
    });
}
