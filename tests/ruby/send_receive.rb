# Ruby stomp gem scenario: SEND with receipts to a queue, received on another connection.
#
# A producer publishes COUNT messages to a queue, each with a receipt it waits for and custom
# headers; a consumer on another connection, subscribed with a block, gets every one in order
# with its body (non-ASCII included), its custom headers unchanged, a unique message-id and
# its subscription's id.

require_relative "scenario"
include Scenario

COUNT = 10
DESTINATION = "/queue/ruby-send-receive".freeze

Scenario.run do
  hosts = Scenario.hosts
  consumer, inbox = connect(hosts, "consumer")
  subscribe(consumer, inbox, DESTINATION, "ruby-consumer")
  producer, receipts = connect(hosts, "producer")
  bodies = (0...COUNT).map { |i| "ruby message #{i}: caf\u00e9 \u2713" }
  bodies.each_with_index do |body, i|
    publish(producer, receipts, DESTINATION, body,
            "x-index" => i.to_s, "x-customer" => "ACME Corp", "x-empty" => "")
  end
  log "#{COUNT} messages sent, each with its RECEIPT"
  got = inbox.wait_for_messages(COUNT)
  check(got.size == COUNT, "#{got.size} messages for #{COUNT} sent: #{got.map(&:body)}")
  check(got.map { |m| m.body.force_encoding(Encoding::UTF_8) } == bodies,
        "bodies differ: #{got.map(&:body)}")
  got.each_with_index do |m, i|
    h = m.headers
    check(m.command == "MESSAGE", "a #{m.command} frame among the messages: #{h}")
    check(h["destination"] == DESTINATION, "destination header: #{h}")
    check(h["x-index"] == i.to_s && h["x-customer"] == "ACME Corp" && h["x-empty"] == "",
          "custom headers not passed through unchanged: #{h}")
    check(h["subscription"] == "ruby-consumer", "subscription header: #{h}")
    check(h.key?("message-id"), "no message-id: #{h}")
  end
  ids = got.map { |m| m.headers["message-id"] }.uniq
  check(ids.size == COUNT, "message ids not unique: #{ids}")
  producer.close
  consumer.close
  log "#{COUNT} messages received in order with their custom headers"
end
