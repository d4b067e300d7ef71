//! ActiveMQ's virtual topics: a message published on `/topic/VirtualTopic.X` also goes, as a
//! copy with the same id, to every queue `/queue/Consumer.NAME.VirtualTopic.X`, so that each
//! consumer group NAME shares one queue's messages (load-balanced, acknowledged, kept while it
//! is away) while the groups all see every message.
//!
//! A consumer queue keeps getting copies while no one reads it, so it must outlive its
//! consumers and a takeover: unlike other queues it is never removed when idle, and, like every
//! queue, it is remembered as created ([`created`]) when it is made; recovery brings each
//! consumer queue so remembered back into memory.

use super::*;

const VIRTUAL_TOPIC: &str = "/topic/VirtualTopic.";
const CONSUMER_QUEUE: &str = "/queue/Consumer.";

/// The virtual topic whose consumer queue `queue` is, if it is one.
pub(super) fn virtual_topic_of(queue: &str) -> Option<String> {
    let (_group, topic) = queue.strip_prefix(CONSUMER_QUEUE)?.split_once('.')?;
    topic
        .starts_with("VirtualTopic.")
        .then(|| format!("/topic/{topic}"))
}

impl Broker {
    /// A new queue: fed by its virtual topic if it is a consumer queue.
    pub(super) fn note_queue(&mut self, queue: &Arc<str>) {
        let Some(topic) = virtual_topic_of(queue) else {
            return;
        };
        let queues = self.virtual_queues.entry(topic.into()).or_default();
        if !queues.contains(queue) {
            queues.push(Arc::clone(queue));
        }
    }

    /// A consumer queue deleted by an operator: no longer fed (its registration goes with
    /// the queue's, [`Broker::unregister`]).
    pub(super) fn forget_consumer_queue(&mut self, queue: &Arc<str>) {
        let Some(topic) = virtual_topic_of(queue) else {
            return;
        };
        if let Some(queues) = self.virtual_queues.get_mut(topic.as_str()) {
            queues.retain(|q| q != queue);
        }
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

    /// Brings back the consumer queues remembered as created (a takeover): each is in memory
    /// and fed again, empty or not, before anyone subscribes to it.
    pub(super) fn recover_consumer_queues(&mut self) {
        let consumer_queues: Vec<Arc<str>> = (self.created.iter())
            .filter(|name| virtual_topic_of(name).is_some())
            .cloned()
            .collect();
        for queue in consumer_queues {
            self.queue(&queue);
        }
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
