# Ruby stomp gem scenario: a `browser:true` subscription to a queue.
#
# Three messages wait on a queue. A browsing subscription gets each of them, then one more
# MESSAGE marking the end of the browse, as ActiveMQ 5.17 sends it: an empty body and exactly
# the headers browser:end, destination (the queue), message-id:0 and subscription (the
# browsing subscription's id). Nothing comes after it, and browsing consumed nothing: an
# ordinary consumer then gets all three.
#
# Not run by tests/tests/other_clients.rs yet: written ahead of brokerd's support and checked
# against ActiveMQ 5.17.2 (Debian's activemq), whose behaviour it asserts.

require_relative "scenario"
include Scenario

DESTINATION = "/queue/ruby-browse".freeze
BODIES = ["first", "second", "third"].freeze

Scenario.run do
  hosts = Scenario.hosts
  producer, receipts = connect(hosts, "producer")
  BODIES.each { |body| publish(producer, receipts, DESTINATION, body) }
  browser, browsed = connect(hosts, "browser")
  subscribe(browser, browsed, DESTINATION, "browse", browser: "true")
  browsed.wait_for_messages(BODIES.size + 1)
  got = browsed.quiet_for(1.0)
  got.each { |m| log "browsed #{m.body.inspect}: #{m.headers}" }
  check(got.size == BODIES.size + 1,
        "#{got.size} frames for #{BODIES.size} messages and the end marker: #{got.map(&:body)}")
  check(got.first(BODIES.size).map(&:body) == BODIES, "browsed #{got.map(&:body)}")
  check(got.first(BODIES.size).none? { |m| m.headers.key?("browser") },
        "a browsed message carries a browser header: #{got.map(&:headers)}")
  marker = got.last
  want = { "browser" => "end", "destination" => DESTINATION, "message-id" => "0",
           "subscription" => "browse" }
  check(marker.headers == want && marker.body.empty?,
        "the last frame is not the end marker #{want}: #{marker.headers} #{marker.body.inspect}")
  consumer, consumed = connect(hosts, "consumer")
  subscribe(consumer, consumed, DESTINATION, "consume")
  consumed.wait_for_messages(BODIES.size)
  got = consumed.quiet_for(1.0)
  check(got.map(&:body) == BODIES, "after the browse a consumer got #{got.map(&:body)}")
  [producer, browser, consumer].each(&:close)
  log "browsed a snapshot and its end marker; the messages stayed on the queue"
end
