//! Durable topic subscriptions and their registry.

use super::*;

#[test]
fn a_durable_subscription_keeps_messages_while_offline() {
    let mut b = broker();
    let producer = open(&mut b, 1, None);
    let mut sub = open(&mut b, 2, Some("client-a"));
    let durable = |id: &str| SubscribeSpec {
        id: id.into(),
        destination: "/topic/news".into(),
        ack: AckMode::ClientIndividual,
        prefetch: 10,
        durable_name: Some("daily".into()),
        browser: false,
        options: Default::default(),
    };
    b.handle(Request::Subscribe {
        conn: sub.conn,
        spec: durable("s1"),
        receipt: None,
    });
    send(&mut b, &producer, "/topic/news", "one", &[]);
    let got = received(&mut sub);
    assert_eq!(got.len(), 1);
    b.handle(Request::Close { conn: sub.conn });
    send(&mut b, &producer, "/topic/news", "two", &[]);
    let mut back = open(&mut b, 3, Some("client-a"));
    b.handle(Request::Subscribe {
        conn: back.conn,
        spec: durable("s2"),
        receipt: None,
    });
    assert_eq!(flags(&mut back), flagged(&[("one", true), ("two", false)]));
}

#[test]
fn a_durable_subscription_pages_out_and_its_deletion_purges_the_store() {
    let store = MapStore::default();
    let (mut b, mut reads) = paged_broker(&store, 7, 4);
    let producer = open(&mut b, 1, None);
    let durable = |id: &str| SubscribeSpec {
        id: id.into(),
        destination: "/topic/news".into(),
        ack: AckMode::ClientIndividual,
        prefetch: 2,
        durable_name: Some("daily".into()),
        browser: false,
        options: Default::default(),
    };
    let sub = open(&mut b, 2, Some("client-a"));
    b.handle(Request::Subscribe {
        conn: sub.conn,
        spec: durable("s1"),
        receipt: None,
    });
    b.handle(Request::Close { conn: sub.conn });
    persistent_sends(&mut b, &producer, "/topic/news", 0..10);
    // The subscription's space: the first number the broker of epoch 7 took.
    let space = &*registry::space((7 << 40) | 1);
    assert_eq!(store.count(space), 10);
    assert_eq!(b.counts().messages, 10, "4 in memory, 6 paged out");
    let mut back = open(&mut b, 3, Some("client-a"));
    b.handle(Request::Subscribe {
        conn: back.conn,
        spec: durable("s2"),
        receipt: None,
    });
    let got = drain_acking(&mut b, &mut reads, &store, &mut back);
    assert_eq!(
        got.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
        numbers(0..10)
    );
    b.handle(Request::Close { conn: back.conn });

    persistent_sends(&mut b, &producer, "/topic/news", 10..20);
    assert_eq!(store.count(space), 10);
    let gone = open(&mut b, 4, Some("client-a"));
    b.handle(Request::Unsubscribe {
        conn: gone.conn,
        id: "none".into(),
        durable_name: Some("daily".into()),
        receipt: None,
    });
    serve(&mut b, &mut reads, &store);
    assert_eq!(store.count(space), 0);
    assert_eq!(store.count(registry::REGISTRY), 0);
}

#[test]
fn durable_subscribe_and_unsubscribe_are_receipted_once_the_registry_change_is_durable() {
    let store = HeldStore::default();
    let mut b = Broker::new(settings(7, 2), Box::new(store.clone()));
    let mut reader = open(&mut b, 1, Some("reader"));
    subscribe_durable(&mut b, &reader, "d", "/topic/t", Some("subscribed"));
    assert_eq!(answers(&mut reader), (vec![], vec![]), "not durable yet");
    store.release();
    assert_eq!(answers(&mut reader).0, ["subscribed"]);
    b.handle(Request::Unsubscribe {
        conn: reader.conn,
        id: "d".into(),
        durable_name: Some("feed".into()),
        receipt: Some("deleted".into()),
    });
    assert_eq!(answers(&mut reader), (vec![], vec![]), "not durable yet");
    store.release();
    assert_eq!(answers(&mut reader).0, ["deleted"]);
}

#[test]
fn a_refused_durable_subscribe_leaves_the_active_subscriptions_messages_alone() {
    let store = MapStore::default();
    let mut b = stored_broker(&store);
    let producer = open(&mut b, 1, None);
    let mut reader = open(&mut b, 2, Some("reader"));
    subscribe_durable(&mut b, &reader, "d", "/topic/a", None);
    persistent_sends(&mut b, &producer, "/topic/a", 0..3);
    assert_eq!(bodies(&mut reader), ["0"], "prefetch 1");
    // The same durable subscription, active, asked for again on another topic.
    subscribe_durable(&mut b, &reader, "again", "/topic/b", None);
    let (_, errors) = answers(&mut reader);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].0.contains("already active"), "{errors:?}");
    assert_eq!(store.count_durable(), 3, "its messages are still stored");
    assert_eq!(b.counts().messages, 3, "and still waiting for it");
}

#[test]
fn durable_subscriptions_whose_names_hold_the_old_separator_stay_apart_across_a_restart() {
    // Joined by U+0001, both pairs were the key "a\u{1}b\u{1}c".
    let pairs = [("a\u{1}b", "c"), ("a", "b\u{1}c")];
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        for (conn, (client_id, name)) in (10..).zip(pairs) {
            let client = open(&mut b, conn, Some(client_id));
            subscribe_durable_named(&mut b, &client, name);
            b.handle(Request::Close { conn });
        }
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/topic/news", 0..3);
    }
    let (mut b, mut reads) = paged_broker(&store, 8, 4);
    b.recover(&store).unwrap();
    for (conn, (client_id, name)) in (20..).zip(pairs) {
        let mut client = open(&mut b, conn, Some(client_id));
        subscribe_durable_named(&mut b, &client, name);
        let got = drain_acking(&mut b, &mut reads, &store, &mut client);
        assert_eq!(
            got.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
            numbers(0..3),
            "client-id {client_id:?}, subscription {name:?}"
        );
    }
}

#[test]
fn a_deleted_durable_subscription_stays_deleted_after_a_crash_mid_purge() {
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let client = open(&mut b, 2, Some("client-a"));
        subscribe_durable_named(&mut b, &client, "daily");
        b.handle(Request::Close { conn: client.conn });
        let producer = open(&mut b, 1, None);
        // Four in memory, six paged out to the store only.
        persistent_sends(&mut b, &producer, "/topic/news", 0..10);
        let gone = open(&mut b, 3, Some("client-a"));
        b.handle(Request::Unsubscribe {
            conn: gone.conn,
            id: "none".into(),
            durable_name: Some("daily".into()),
            receipt: Some("deleted".into()),
        });
        // The crash: the purge's page reads (in `_reads`) are never served.
    }
    assert_eq!(store.count(&registry::space((7 << 40) | 1)), 6);
    // The same subscription is created again, and the broker crashes again before reading the
    // recovery's purge.
    {
        let (mut b, _reads) = paged_broker(&store, 8, 4);
        b.recover(&store).unwrap();
        let client = open(&mut b, 2, Some("client-a"));
        subscribe_durable_named(&mut b, &client, "daily");
        b.handle(Request::Close { conn: client.conn });
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/topic/news", 100..102);
    }
    let (mut b, mut reads) = paged_broker(&store, 9, 4);
    b.recover(&store).unwrap();
    let mut client = open(&mut b, 2, Some("client-a"));
    subscribe_durable_named(&mut b, &client, "daily");
    let got = drain_acking(&mut b, &mut reads, &store, &mut client);
    assert_eq!(
        got.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
        numbers(100..102),
        "only what was published after the re-creation"
    );
    // The recovery finished the purge the crash cut short.
    assert_eq!(store.count(&registry::space((7 << 40) | 1)), 0);
}

#[test]
fn an_older_brokerds_durable_subscriptions_are_migrated_in_place() {
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let client = open(&mut b, 2, Some("client-a"));
        subscribe_durable_named(&mut b, &client, "daily");
        b.handle(Request::Close { conn: client.conn });
        let producer = open(&mut b, 1, None);
        persistent_sends(&mut b, &producer, "/topic/news", 0..6);
    }
    // Rewrite the store as an older brokerd had it: registry "subs", key "client-id U+0001
    // name", value the topic, messages in "d/" ++ key.
    {
        let mut map = store.map();
        let new_space = registry::space((7 << 40) | 1).to_string();
        let moved: Vec<_> = map
            .iter()
            .filter(|((s, _), _)| *s == new_space || s == registry::REGISTRY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((space, key), value) in moved {
            map.remove(&(space.clone(), key.clone()));
            if space == registry::REGISTRY {
                map.insert(
                    ("subs".into(), b"client-a\x01daily".to_vec()),
                    Bytes::from_static(b"/topic/news"),
                );
            } else {
                map.insert(("d/client-a\u{1}daily".into(), key), value);
            }
        }
        // An entry no brokerd could read (no client-id separator): left alone, messages too.
        map.insert(
            ("subs".into(), b"no-client-id".to_vec()),
            Bytes::from_static(b"/topic/news"),
        );
        map.insert(
            ("d/no-client-id".into(), b"m".to_vec()),
            Bytes::from_static(b"kept"),
        );
    }
    let (mut b, mut reads) = paged_broker(&store, 8, 4);
    b.recover(&store).unwrap();
    assert_eq!(store.count("subs"), 1, "only the unreadable entry stays");
    assert_eq!(store.count(registry::REGISTRY), 1);
    assert_eq!(store.count("d/client-a\u{1}daily"), 6, "no message moved");
    let mut client = open(&mut b, 2, Some("client-a"));
    subscribe_durable_named(&mut b, &client, "daily");
    let got = drain_acking(&mut b, &mut reads, &store, &mut client);
    assert_eq!(
        got.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
        numbers(0..6)
    );
    // Every page read the recovery asked for (the purge of orphans among them) is served.
    serve(&mut b, &mut reads, &store);
    assert_eq!(
        store.count("d/no-client-id"),
        1,
        "an entry left alone keeps its messages"
    );
}

#[test]
fn a_subscription_in_both_registries_refuses_the_start_instead_of_purging_either() {
    let store = MapStore::default();
    {
        let (mut b, _reads) = paged_broker(&store, 7, 4);
        let client = open(&mut b, 2, Some("client-a"));
        subscribe_durable_named(&mut b, &client, "daily");
    }
    // An older brokerd ran afterwards and created the same subscription in its own layout.
    store.map().insert(
        ("subs".into(), b"client-a\x01daily".to_vec()),
        Bytes::from_static(b"/topic/news"),
    );
    let (mut b, _reads) = paged_broker(&store, 8, 4);
    let err = b.recover(&store).unwrap_err();
    assert!(
        matches!(err, StoreError::RegistryConflict { ref client_id, ref name } if client_id == "client-a" && name == "daily"),
        "{err}"
    );
    assert_eq!(store.count("subs"), 1, "nothing migrated or purged");
    assert_eq!(store.count(registry::REGISTRY), 1);
}

#[test]
fn a_durable_subscription_to_a_wildcard_keeps_every_matching_topic_while_away_and_after_a_takeover()
{
    let store = MapStore::default();
    let mut b = stored_broker(&store);
    let producer = open(&mut b, 1, None);
    let reader = open(&mut b, 2, Some("app"));
    subscribe_durable(&mut b, &reader, "d", "/topic/prices.>", None);
    unsubscribe(&mut b, &reader, "d");
    for (topic, body) in [
        ("/topic/prices.eu", "eu"),
        ("/topic/other", "no"),
        ("/topic/prices.us.ny", "ny"),
    ] {
        send(&mut b, &producer, topic, body, &[("persistent", "true")]);
    }
    drop(b);
    // The next broker reads the subscription back, pattern and all.
    let mut next = Broker::new(settings(8, 2), Box::new(store.clone()));
    next.recover(&store).unwrap();
    let mut reader = open(&mut next, 2, Some("app"));
    subscribe_durable(&mut next, &reader, "d", "/topic/prices.>", None);
    let got = received(&mut reader);
    assert_eq!(got.len(), 1, "prefetch 1: {got:?}");
    assert_eq!(got[0].0, "eu");
    ack(&mut next, &reader, got[0].1.as_deref().unwrap(), false);
    assert_eq!(bodies(&mut reader), ["ny"]);
}

#[test]
fn a_durable_subscription_names_one_topic_or_one_pattern() {
    let mut b = broker();
    let mut client = open(&mut b, 1, Some("app"));
    subscribe_durable(&mut b, &client, "d", "/topic/a,/topic/b", None);
    assert!(refusal(&mut client).contains("one topic or one wildcard pattern"));
}
