# Ruby stomp gem scenario: ActiveMQ's destination wildcards, `.` separating the parts of a
# name, `*` matching one part and `>` the rest.
#
# A subscription to /topic/ruby-foo.* gets what is sent to /topic/ruby-foo.a and
# /topic/ruby-foo.b, not /topic/ruby-foo (`*` is exactly one part), /topic/ruby-foo.a.deeper
# nor /topic/ruby-bar.a; one to /queue/ruby-orders.> gets /queue/ruby-orders.us,
# /queue/ruby-orders.eu.fr and, as ActiveMQ 5.17 does, /queue/ruby-orders itself (`>` is zero
# or more parts), not /queue/ruby-orders-archive.us. Each MESSAGE's destination header is the
# concrete destination it was sent to, and its subscription header the wildcard
# subscription's id.
#
# Not run by tests/tests/other_clients.rs yet: written ahead of brokerd's support and checked
# against ActiveMQ 5.17.2 (Debian's activemq), whose behaviour it asserts.

require_relative "scenario"
include Scenario

TOPIC_PATTERN = "/topic/ruby-foo.*".freeze
QUEUE_PATTERN = "/queue/ruby-orders.>".freeze
TOPIC_MATCHES = %w[/topic/ruby-foo.a /topic/ruby-foo.b].freeze
QUEUE_MATCHES = %w[/queue/ruby-orders.us /queue/ruby-orders.eu.fr /queue/ruby-orders].freeze
OTHERS = %w[/topic/ruby-foo /topic/ruby-foo.a.deeper /topic/ruby-bar.a
            /queue/ruby-orders-archive.us].freeze

Scenario.run do
  hosts = Scenario.hosts
  consumer, inbox = connect(hosts, "consumer")
  subscribe(consumer, inbox, TOPIC_PATTERN, "topic-wild")
  subscribe(consumer, inbox, QUEUE_PATTERN, "queue-wild")
  # A topic keeps nothing for a subscription that is not in place yet: wait until one sent to
  # the pattern comes back through it.
  publish(consumer, inbox, "/topic/ruby-foo.ready", "ready")
  inbox.wait_for_message("the ready message through #{TOPIC_PATTERN}") { |m| m.body == "ready" }
  inbox.take
  producer, receipts = connect(hosts, "producer")
  (OTHERS + TOPIC_MATCHES + QUEUE_MATCHES).each do |destination|
    publish(producer, receipts, destination, "to #{destination}")
  end
  matches = TOPIC_MATCHES + QUEUE_MATCHES
  inbox.wait_for_messages(matches.size)
  got = inbox.quiet_for(1.0)
  got.each do |m|
    h = m.headers
    log "#{h['subscription']} got #{m.body.inspect}: destination #{h['destination']}"
  end
  check(got.map(&:body).sort == matches.map { |d| "to #{d}" }.sort,
        "the wildcard subscriptions got #{got.map(&:body)}, want what was sent to #{matches}")
  got.each do |m|
    h = m.headers
    check(h["destination"] == m.body.delete_prefix("to "),
          "destination header is not the concrete destination: #{h}")
    want = h["destination"].start_with?("/topic/") ? "topic-wild" : "queue-wild"
    check(h["subscription"] == want, "subscription header: #{h}")
  end
  producer.close
  consumer.close
  log "each wildcard subscription got exactly its matches, under their concrete names"
end
