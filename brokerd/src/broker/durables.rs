//! Durable topic subscriptions by key, and each topic's, so that a message published to a
//! topic finds that topic's durable subscriptions without looking at every other one. A
//! subscription to a wildcard pattern (`/topic/prices.>`) is matched against each topic
//! published instead.

use super::names::Pattern;
use super::{Durable, DurableKey};
use std::collections::HashMap;
use std::sync::Arc;

/// The durable subscriptions. A subscription's topic changes only through
/// [`Durables::retopic`], which keeps the index by topic right.
#[derive(Debug, Default)]
pub(super) struct Durables {
    by_key: HashMap<DurableKey, Durable>,
    by_topic: HashMap<Arc<str>, Vec<DurableKey>>,
    /// Subscriptions to wildcard patterns.
    by_pattern: Vec<(Pattern, DurableKey)>,
}

impl Durables {
    pub(super) fn get(&self, key: &DurableKey) -> Option<&Durable> {
        self.by_key.get(key)
    }

    /// The subscription, to change anything but its topic.
    pub(super) fn get_mut(&mut self, key: &DurableKey) -> Option<&mut Durable> {
        self.by_key.get_mut(key)
    }

    pub(super) fn insert(&mut self, key: DurableKey, durable: Durable) {
        let topic = Arc::clone(&durable.topic);
        if let Some(old) = self.by_key.insert(key.clone(), durable) {
            self.unindex(&old.topic, &key);
        }
        self.index(&topic, key);
    }

    fn index(&mut self, topic: &Arc<str>, key: DurableKey) {
        match Pattern::new(topic) {
            Some(pattern) => self.by_pattern.push((pattern, key)),
            None => self
                .by_topic
                .entry(Arc::clone(topic))
                .or_default()
                .push(key),
        }
    }

    pub(super) fn remove(&mut self, key: &DurableKey) -> Option<Durable> {
        let durable = self.by_key.remove(key)?;
        self.unindex(&durable.topic, key);
        Some(durable)
    }

    /// Moves subscription `key` to `topic`.
    pub(super) fn retopic(&mut self, key: &DurableKey, topic: &Arc<str>) {
        let Some(durable) = self.by_key.get_mut(key) else {
            return;
        };
        let old = std::mem::replace(&mut durable.topic, Arc::clone(topic));
        self.unindex(&old, key);
        self.index(topic, key.clone());
    }

    /// The keys of the durable subscriptions a message published on `topic` goes to: the
    /// topic's own, then those whose pattern it matches.
    pub(super) fn of_topic(&self, topic: &str) -> Vec<DurableKey> {
        let own = self.by_topic.get(topic).map_or(&[][..], Vec::as_slice);
        let mut keys = own.to_vec();
        (self.by_pattern.iter())
            .filter(|(pattern, _)| pattern.matches(topic))
            .for_each(|(_, key)| keys.push(key.clone()));
        keys
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &DurableKey> {
        self.by_key.keys()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Durable> {
        self.by_key.values()
    }

    fn unindex(&mut self, topic: &str, key: &DurableKey) {
        self.by_pattern.retain(|(_, k)| k != key);
        if let Some(keys) = self.by_topic.get_mut(topic) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_topic.remove(topic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::paging::Paged;
    use crate::broker::pending::Pending;

    fn durable(topic: &str) -> Durable {
        Durable {
            topic: topic.into(),
            space: "d/x".into(),
            pending: Pending::new(&Default::default(), false),
            paged: Paged::default(),
            active: None,
        }
    }

    #[test]
    fn each_topic_lists_its_own_subscriptions_through_inserts_moves_and_removals() {
        let mut d = Durables::default();
        let (a, b) = (
            ("c".to_owned(), "a".to_owned()),
            ("c".to_owned(), "b".to_owned()),
        );
        d.insert(a.clone(), durable("/topic/x"));
        d.insert(b.clone(), durable("/topic/x"));
        assert_eq!(d.of_topic("/topic/x"), [a.clone(), b.clone()]);
        d.retopic(&a, &Arc::from("/topic/y"));
        assert_eq!(d.of_topic("/topic/x"), std::slice::from_ref(&b));
        assert_eq!(d.of_topic("/topic/y"), std::slice::from_ref(&a));
        assert_eq!(&*d.get(&a).unwrap().topic, "/topic/y");
        d.insert(b.clone(), durable("/topic/y"));
        assert!(d.of_topic("/topic/x").is_empty());
        assert_eq!(d.of_topic("/topic/y"), [a.clone(), b.clone()]);
        d.remove(&a);
        assert_eq!(d.of_topic("/topic/y"), std::slice::from_ref(&b));
        assert!(d.get(&a).is_none());
        // A pattern's subscription gets every topic it matches, until it moves or goes.
        let w = ("c".to_owned(), "w".to_owned());
        d.insert(w.clone(), durable("/topic/y.>"));
        assert_eq!(d.of_topic("/topic/y"), [b.clone(), w.clone()]);
        assert_eq!(d.of_topic("/topic/y.z"), std::slice::from_ref(&w));
        d.retopic(&w, &Arc::from("/topic/q"));
        assert!(d.of_topic("/topic/y.z").is_empty());
        assert_eq!(d.of_topic("/topic/q"), std::slice::from_ref(&w));
        d.retopic(&w, &Arc::from("/topic/*"));
        assert_eq!(d.of_topic("/topic/q"), std::slice::from_ref(&w));
        d.remove(&w);
        assert!(d.of_topic("/topic/q").is_empty());
    }
}
