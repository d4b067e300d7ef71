//! Durable topic subscriptions by key, and each topic's, so that a message published to a
//! topic finds that topic's durable subscriptions without looking at every other one.

use super::{Durable, DurableKey};
use std::collections::HashMap;
use std::sync::Arc;

/// The durable subscriptions. A subscription's topic changes only through
/// [`Durables::retopic`], which keeps the index by topic right.
#[derive(Debug, Default)]
pub(super) struct Durables {
    by_key: HashMap<DurableKey, Durable>,
    by_topic: HashMap<Arc<str>, Vec<DurableKey>>,
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
        self.by_topic.entry(topic).or_default().push(key);
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
        self.by_topic
            .entry(Arc::clone(topic))
            .or_default()
            .push(key.clone());
    }

    /// The keys of `topic`'s durable subscriptions.
    pub(super) fn of_topic(&self, topic: &str) -> &[DurableKey] {
        self.by_topic.get(topic).map_or(&[], Vec::as_slice)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &DurableKey> {
        self.by_key.keys()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Durable> {
        self.by_key.values()
    }

    fn unindex(&mut self, topic: &str, key: &DurableKey) {
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
        assert_eq!(d.of_topic("/topic/y"), [b]);
        assert!(d.get(&a).is_none());
    }
}
