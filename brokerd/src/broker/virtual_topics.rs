//! ActiveMQ's virtual topics: a message published on `/topic/VirtualTopic.X` also goes, as a
//! copy with the same id, to every queue `/queue/Consumer.NAME.VirtualTopic.X`, so that each
//! consumer group NAME shares one queue's messages (load-balanced, acknowledged, kept while it
//! is away) while the groups all see every message.
//!
//! A consumer queue keeps getting copies while no one reads it, so it must outlive its
//! consumers and a takeover: unlike other queues it is never removed when idle, and its name
//! is recorded in the store's [`VIRTUAL_QUEUES`] space when it is made, which recovery reads
//! back.

use super::*;

/// Where consumer queues' names are recorded (key: the queue's canonical name; no value).
pub const VIRTUAL_QUEUES: &str = "virtual-queues";

const VIRTUAL_TOPIC: &str = "/topic/VirtualTopic.";
const CONSUMER_QUEUE: &str = "/queue/Consumer.";

/// The virtual topic whose consumer queue `queue` is, if it is one.
fn virtual_topic_of(queue: &str) -> Option<String> {
    let (_group, topic) = queue.strip_prefix(CONSUMER_QUEUE)?.split_once('.')?;
    topic
        .starts_with("VirtualTopic.")
        .then(|| format!("/topic/{topic}"))
}

impl Broker {
    /// A new queue: recorded as a consumer queue if it is one (`recovered`: read back from the
    /// store, already recorded).
    pub(super) fn note_queue(&mut self, queue: &Arc<str>, recovered: bool) {
        let Some(topic) = virtual_topic_of(queue) else {
            return;
        };
        let queues = self.virtual_queues.entry(topic.into()).or_default();
        if queues.contains(queue) {
            return;
        }
        queues.push(Arc::clone(queue));
        if !recovered {
            let key = Bytes::copy_from_slice(queue.as_bytes());
            self.store
                .put(VIRTUAL_QUEUES.into(), key, Value::Bytes(Bytes::new()), None);
        }
    }

    /// A consumer queue deleted by an operator: no longer fed, nor recorded.
    pub(super) fn forget_consumer_queue(&mut self, queue: &Arc<str>) {
        let Some(topic) = virtual_topic_of(queue) else {
            return;
        };
        if let Some(queues) = self.virtual_queues.get_mut(topic.as_str()) {
            queues.retain(|q| q != queue);
        }
        let key = Bytes::copy_from_slice(queue.as_bytes());
        self.store.remove(VIRTUAL_QUEUES.into(), key);
    }

    /// Whether a queue must be kept while idle: a consumer queue of a virtual topic.
    pub(super) fn is_consumer_queue(&self, queue: &str) -> bool {
        virtual_topic_of(queue).is_some_and(|t| {
            self.virtual_queues
                .get(t.as_str())
                .is_some_and(|q| !q.is_empty())
        })
    }

    /// A message published on a virtual topic: a copy to each of its consumer queues.
    pub(super) fn fan_out(&mut self, msg: &Message) {
        if !msg.destination.starts_with(VIRTUAL_TOPIC) {
            return;
        }
        let Some(queues) = self.virtual_queues.get(&msg.destination).cloned() else {
            return;
        };
        for queue in queues {
            let mut copy = msg.clone();
            copy.destination = queue;
            self.publish(copy, None, false);
        }
    }

    /// Reads back the consumer queues a store records (a takeover): each exists again, empty
    /// or not.
    pub(super) fn recover_virtual_queues(
        &mut self,
        store: &dyn PageStore,
        spaces: &[Arc<str>],
    ) -> Result<(), StoreError> {
        if !spaces.iter().any(|s| &**s == VIRTUAL_QUEUES) {
            return Ok(());
        }
        for (key, _) in store.read(VIRTUAL_QUEUES, &[], usize::MAX)? {
            match std::str::from_utf8(&key) {
                Ok(name) => {
                    let queue: Arc<str> = name.into();
                    // Noted first: made by queue() below, it would be recorded again.
                    self.note_queue(&queue, true);
                    self.queue(&queue);
                }
                Err(_) => warn!("skipping a recorded consumer queue whose name is not UTF-8"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_queues_name_their_virtual_topic() {
        for (queue, topic) in [
            (
                "/queue/Consumer.A.VirtualTopic.Orders",
                Some("/topic/VirtualTopic.Orders"),
            ),
            (
                "/queue/Consumer.b2.VirtualTopic.a.b",
                Some("/topic/VirtualTopic.a.b"),
            ),
            ("/queue/Consumer.A.Orders", None),
            ("/queue/Consumer.VirtualTopic.Orders", None),
            ("/queue/VirtualTopic.Orders", None),
            ("/topic/Consumer.A.VirtualTopic.Orders", None),
        ] {
            assert_eq!(virtual_topic_of(queue).as_deref(), topic, "{queue}");
        }
    }
}
