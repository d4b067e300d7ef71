# Ruby stomp gem scenario: a subscription with a JMS selector in its `selector` header.
#
# Five messages go to a queue, with a custom `color` header and the STOMP `priority` header
# (JMSPriority to the selector). A consumer subscribed with
# "color = 'red' AND JMSPriority > 4" gets only the two that match; the three that do not
# (red at priority 4, blue at 9, no color at 9) stay on the queue, and a second consumer
# without a selector, subscribed while the first still is, gets exactly those.
#
# Not run by tests/tests/other_clients.rs yet: written ahead of brokerd's support and checked
# against ActiveMQ 5.17.2 (Debian's activemq), whose behaviour it asserts.

require_relative "scenario"
include Scenario

DESTINATION = "/queue/ruby-selector".freeze
SELECTOR = "color = 'red' AND JMSPriority > 4".freeze
MESSAGES = {
  "red-9" => { "color" => "red", "priority" => "9" },
  "red-4" => { "color" => "red", "priority" => "4" },
  "blue-9" => { "color" => "blue", "priority" => "9" },
  "none-9" => { "priority" => "9" },
  "red-5" => { "color" => "red", "priority" => "5" }
}.freeze
MATCHING = %w[red-9 red-5].freeze

Scenario.run do
  hosts = Scenario.hosts
  producer, receipts = connect(hosts, "producer")
  MESSAGES.each { |body, headers| publish(producer, receipts, DESTINATION, body, headers) }
  selecting, selected = connect(hosts, "selecting consumer")
  subscribe(selecting, selected, DESTINATION, "red-and-urgent", selector: SELECTOR)
  selected.wait_for_messages(MATCHING.size)
  got = selected.quiet_for(1.0)
  got.each { |m| log "the selector let through #{m.body}: #{m.headers.slice('color', 'priority')}" }
  check(got.map(&:body).sort == MATCHING.sort,
        "the selecting consumer got #{got.map(&:body)}, want #{MATCHING}")
  other, rest = connect(hosts, "other consumer")
  subscribe(other, rest, DESTINATION, "everything")
  left = MESSAGES.keys - MATCHING
  rest.wait_for_messages(left.size)
  got = rest.quiet_for(1.0)
  log "left on the queue for another consumer: #{got.map(&:body)}"
  check(got.map(&:body).sort == left.sort,
        "the other consumer got #{got.map(&:body)}, want #{left}")
  check(selected.messages.size == MATCHING.size, "the selecting consumer got more: " \
                                                 "#{selected.messages.map(&:body)}")
  [producer, selecting, other].each(&:close)
  log "the selector took only its matches; the rest stayed for another consumer"
end
