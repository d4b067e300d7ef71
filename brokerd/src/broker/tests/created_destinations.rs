//! The registry of created destinations: `admin` is asked for creating a destination, once,
//! not for using one again after it went idle, lost its subscribers, or the broker restarted.

use super::*;
use crate::auth::{users_file, Access};
use shared_proto::destinations::{DestinationAnswer, DestinationCall};

/// root may create; anonymous clients may read and write but not create.
const USERS: &str = r#"
allow_anonymous = true
allow_clear_text_passwords = true

[users.root]
password = "r"
groups = ["admins"]

[[authorization]]
destination = "/queue/>"
read = ["admins", "anonymous"]
write = ["admins", "anonymous"]
admin = ["admins"]

[[authorization]]
destination = "/topic/>"
read = ["admins", "anonymous"]
admin = ["admins"]
"#;

/// A connection logged in as `login` (with its passcode), or anonymous with `None`.
fn open_as(b: &mut Broker, conn: ConnId, login: Option<(&str, &str)>) -> Client {
    open_with_client_id(b, conn, login, None)
}

/// [`open_as`] with a client-id.
fn open_with_client_id(
    b: &mut Broker,
    conn: ConnId,
    login: Option<(&str, &str)>,
    client_id: Option<&str>,
) -> Client {
    let security = crate::reload::fixed(users_file::parse(USERS).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let access = runtime
        .block_on(Access::authenticate(
            &security,
            login.map(|(l, _)| l),
            login.map(|(_, p)| p),
        ))
        .unwrap();
    let (outbox, rx) = mpsc::unbounded_channel();
    let (verdict, mut answer) = oneshot::channel();
    b.handle(Request::Open(Opening {
        conn,
        session: format!("n1-7-{conn}"),
        client_id: client_id.map(str::to_owned),
        peer: format!("127.0.0.1:{conn}"),
        access: Some(access),
        outbox,
        verdict,
    }));
    assert_eq!(answer.try_recv(), Ok(Ok(())), "connection {conn} refused");
    Client { conn, outbox: rx }
}

const ROOT: Option<(&str, &str)> = Some(("root", "r"));

/// An operator's `ctl delete`, answered at once (the store is in memory).
fn delete(b: &mut Broker, destination: &str) -> DestinationAnswer {
    let (reply, mut answer) = oneshot::channel();
    b.handle(Request::Destinations {
        call: DestinationCall::Delete {
            destination: destination.into(),
        },
        reply,
    });
    answer.try_recv().expect("answered")
}

/// The names the store's registry holds.
fn registered(store: &MapStore) -> Vec<String> {
    (store.map().keys())
        .filter(|(space, _)| space == created::SPACE)
        .map(|(_, key)| String::from_utf8(key.clone()).unwrap())
        .collect()
}

#[test]
fn a_created_destination_needs_no_admin_again_when_idle_or_after_a_takeover_until_deleted() {
    let store = MapStore::default();
    let mut b = stored_broker(&store);
    let mut root = open_as(&mut b, 1, ROOT);
    // root creates a queue and a topic; both go from memory: the queue consumed to empty and
    // unused, the topic without subscribers.
    subscribe(&mut b, &root, "q", "/queue/x", AckMode::ClientIndividual, 1);
    subscribe(&mut b, &root, "t", "/topic/t", AckMode::Auto, 1);
    send(
        &mut b,
        &root,
        "/queue/x",
        "first",
        &[("persistent", "true")],
    );
    let got = received(&mut root);
    ack(&mut b, &root, got[0].1.as_deref().unwrap(), false);
    b.handle(Request::Close { conn: root.conn });
    assert_eq!(b.counts().destinations, 0, "nothing held in memory");
    assert_eq!(registered(&store), ["/queue/x", "/topic/t"]);

    // A client without admin uses them as they exist; one nobody created it may not create.
    let mut reader = open_as(&mut b, 2, None);
    send(
        &mut b,
        &reader,
        "/queue/x",
        "again",
        &[("persistent", "true")],
    );
    subscribe(
        &mut b,
        &reader,
        "q",
        "/queue/x",
        AckMode::ClientIndividual,
        1,
    );
    subscribe(&mut b, &reader, "t", "/topic/t", AckMode::Auto, 1);
    let got = received(&mut reader);
    assert_eq!(got[0].0, "again");
    ack(&mut b, &reader, got[0].1.as_deref().unwrap(), false);
    b.handle(Request::Close { conn: reader.conn });
    let mut stranger = open_as(&mut b, 3, None);
    send(&mut b, &stranger, "/queue/new", "x", &[]);
    assert_eq!(
        refusal(&mut stranger),
        "user anonymous is not authorised to admin /queue/new (create it)"
    );

    // The next broker on the store knows both, though neither holds a message.
    let mut next = Broker::new(settings(8, 2), Box::new(store.clone()));
    next.recover(&store).unwrap();
    assert_eq!(next.counts().destinations, 0);
    let mut reader = open_as(&mut next, 1, None);
    subscribe(&mut next, &reader, "q", "/queue/x", AckMode::Auto, 1);
    subscribe(&mut next, &reader, "t", "/topic/t", AckMode::Auto, 1);
    send(&mut next, &reader, "/queue/x", "after", &[]);
    assert_eq!(bodies(&mut reader), ["after"]);
    written(&mut next, &reader, "q", 1);
    next.handle(Request::Close { conn: reader.conn });

    // Deleted, each is new again: its next user needs admin.
    assert!(matches!(
        delete(&mut next, "/queue/x"),
        DestinationAnswer::Deleted { removed: 0 }
    ));
    assert!(matches!(
        delete(&mut next, "/topic/t"),
        DestinationAnswer::Deleted { removed: 0 }
    ));
    assert!(registered(&store).is_empty());
    let mut reader = open_as(&mut next, 2, None);
    subscribe(&mut next, &reader, "q", "/queue/x", AckMode::Auto, 1);
    assert_eq!(
        refusal(&mut reader),
        "user anonymous is not authorised to admin /queue/x (create it)"
    );
    let mut reader = open_as(&mut next, 3, None);
    subscribe(&mut next, &reader, "t", "/topic/t", AckMode::Auto, 1);
    assert_eq!(
        refusal(&mut reader),
        "user anonymous is not authorised to admin /topic/t (create it)"
    );
}

#[test]
fn a_durable_subscription_creates_its_topic_so_a_new_one_needs_admin() {
    let store = MapStore::default();
    let mut b = stored_broker(&store);
    let mut reader = open_with_client_id(&mut b, 1, None, Some("reader"));
    subscribe_durable(&mut b, &reader, "d", "/topic/feed", None);
    assert_eq!(
        refusal(&mut reader),
        "user anonymous is not authorised to admin /topic/feed (create it)"
    );
    b.handle(Request::Close { conn: reader.conn });
    let root = open_with_client_id(&mut b, 2, ROOT, Some("root"));
    subscribe_durable(&mut b, &root, "d", "/topic/feed", None);
    b.handle(Request::Close { conn: root.conn });
    assert_eq!(registered(&store), ["/topic/feed"]);
    // The topic exists now: a reader subscribes, durably or not, without admin.
    let mut reader = open_with_client_id(&mut b, 3, None, Some("reader"));
    subscribe_durable(&mut b, &reader, "d", "/topic/feed", None);
    subscribe(&mut b, &reader, "t", "/topic/feed", AckMode::Auto, 1);
    assert!(reader.outbox.try_recv().is_err(), "nothing refused");
}

#[test]
fn a_destination_is_registered_once_and_temporary_ones_never() {
    let store = MapStore::default();
    let mut b = stored_broker(&store);
    let mut client = open(&mut b, 1, None);
    send(&mut b, &client, "/queue/once", "1", &[]);
    subscribe(&mut b, &client, "tmp", "/temp-queue/r", AckMode::Auto, 1);
    assert_eq!(registered(&store), ["/queue/once"]);
    // Were it written again, it would be back in the store: neither a SEND to the queue in
    // memory nor one that brings it back after it went idle writes it.
    store.map().clear();
    send(&mut b, &client, "/queue/once", "2", &[]);
    subscribe(&mut b, &client, "s", "/queue/once", AckMode::Auto, 10);
    assert_eq!(bodies(&mut client), ["1", "2"]);
    written(&mut b, &client, "s", 2);
    unsubscribe(&mut b, &client, "s");
    assert_eq!(
        b.counts().destinations,
        1,
        "only the temporary queue is held"
    );
    send(&mut b, &client, "/queue/once", "3", &[]);
    assert!(registered(&store).is_empty(), "{:?}", store.map().keys());
}

#[test]
fn past_the_registrys_cap_new_names_are_used_but_not_remembered_until_one_is_deleted() {
    let store = MapStore::default();
    let mut limited = settings(7, 2);
    limited.caps.created_destinations = 2;
    let mut b = Broker::new(limited, Box::new(store.clone()));
    let producer = open(&mut b, 1, None);
    send(&mut b, &producer, "/queue/a", "x", &[]);
    let consumer = open(&mut b, 2, None);
    subscribe(&mut b, &consumer, "t", "/topic/b", AckMode::Auto, 1);
    unsubscribe(&mut b, &consumer, "t");
    // Past the cap: nothing is refused, and nothing more is remembered.
    let mut past = open(&mut b, 3, None);
    subscribe(&mut b, &past, "c", "/queue/c", AckMode::Auto, 10);
    send(&mut b, &producer, "/queue/c", "kept", &[]);
    assert_eq!(bodies(&mut past), ["kept"]);
    assert_eq!(registered(&store), ["/queue/a", "/topic/b"]);
    // A virtual topic's consumer queue must be fed while no one reads it: remembered anyway.
    let group = "/queue/Consumer.A.VirtualTopic.Prices";
    subscribe(&mut b, &consumer, "v", group, AckMode::Auto, 1);
    assert_eq!(registered(&store), [group, "/queue/a", "/topic/b"]);
    unsubscribe(&mut b, &consumer, "v");
    // Temporary destinations are not remembered, nor capped.
    subscribe(&mut b, &consumer, "r", "/temp-queue/r", AckMode::Auto, 1);
    assert!(matches!(
        delete(&mut b, "/queue/a"),
        DestinationAnswer::Deleted { removed: 1 }
    ));
    // The consumer queue holds a place: still full, until another is deleted.
    send(&mut b, &producer, "/queue/d", "x", &[]);
    assert_eq!(registered(&store), [group, "/topic/b"]);
    unsubscribe(&mut b, &consumer, "r");
    assert!(matches!(
        delete(&mut b, "/topic/b"),
        DestinationAnswer::Deleted { removed: 0 }
    ));
    send(&mut b, &producer, "/queue/e", "x", &[]);
    assert_eq!(registered(&store), [group, "/queue/e"]);
}

#[test]
fn an_older_brokerds_consumer_queues_are_moved_into_the_registry() {
    let store = MapStore::default();
    let queue = "/queue/Consumer.A.VirtualTopic.Prices";
    store.map().insert(
        (created::LEGACY_CONSUMER_QUEUES.into(), queue.into()),
        Bytes::new(),
    );
    let mut b = stored_broker(&store);
    b.recover(&store).unwrap();
    assert_eq!(registered(&store), [queue]);
    assert_eq!(store.count(created::LEGACY_CONSUMER_QUEUES), 0);
    // Fed before anyone subscribes again, as before the move.
    let producer = open(&mut b, 1, None);
    send(&mut b, &producer, "/topic/VirtualTopic.Prices", "p1", &[]);
    let mut consumer = open(&mut b, 2, None);
    subscribe(&mut b, &consumer, "s", queue, AckMode::Auto, 10);
    assert_eq!(bodies(&mut consumer), ["p1"]);
}

#[test]
fn idle_created_destinations_are_listed_empty_until_deleted() {
    let store = MapStore::default();
    let mut b = stored_broker(&store);
    let producer = open(&mut b, 1, None);
    send(&mut b, &producer, "/queue/idle", "x", &[]);
    let mut consumer = open(&mut b, 2, None);
    subscribe(&mut b, &consumer, "q", "/queue/idle", AckMode::Auto, 10);
    assert_eq!(bodies(&mut consumer), ["x"]);
    written(&mut b, &consumer, "q", 1);
    unsubscribe(&mut b, &consumer, "q");
    subscribe(&mut b, &consumer, "t", "/topic/quiet", AckMode::Auto, 10);
    unsubscribe(&mut b, &consumer, "t");
    assert_eq!(b.counts().destinations, 0, "neither is held in memory");
    let listed = list(&mut b);
    let shown: Vec<(&str, u64, u64)> = (listed.iter())
        .map(|d| (d.name.as_str(), d.depth, d.consumers))
        .collect();
    assert_eq!(shown, [("/queue/idle", 0, 0), ("/topic/quiet", 0, 0)]);
    assert!(matches!(
        delete(&mut b, "/queue/idle"),
        DestinationAnswer::Deleted { removed: 0 }
    ));
    let listed = list(&mut b);
    assert_eq!(listed.len(), 1, "{listed:?}");
}

fn list(b: &mut Broker) -> Vec<shared_proto::destinations::Destination> {
    let (reply, mut answer) = oneshot::channel();
    b.handle(Request::Destinations {
        call: DestinationCall::List,
        reply,
    });
    match answer.try_recv().expect("answered") {
        DestinationAnswer::Listed(listing) => listing.destinations,
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_a_users_file_only_consumer_queues_are_remembered() {
    let store = MapStore::default();
    let mut open_broker = settings(7, 2);
    open_broker.remember_created = false;
    let mut b = Broker::new(open_broker, Box::new(store.clone()));
    let client = open(&mut b, 1, None);
    for n in 0..3 {
        let reply = format!("/queue/reply.{n}");
        subscribe(&mut b, &client, "r", &reply, AckMode::Auto, 1);
        unsubscribe(&mut b, &client, "r");
    }
    let group = "/queue/Consumer.A.VirtualTopic.Prices";
    subscribe(&mut b, &client, "v", group, AckMode::Auto, 1);
    assert_eq!(
        registered(&store),
        [group],
        "no write for unique reply queues"
    );
}
