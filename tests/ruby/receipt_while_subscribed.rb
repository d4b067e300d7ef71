# Ruby stomp gem scenario: SEND with a receipt to a queue the same connection is subscribed to.
#
# The broker owes this connection two frames for every SEND: the RECEIPT and the MESSAGE the
# SEND causes (ActiveMQ writes the RECEIPT first). SENDS times the client publishes with a
# receipt block and waits for it, so whichever order the two frames come in, and however
# they share a read, the gem's listener thread must hand each to its own block: every
# RECEIPT arrives, and every message arrives exactly once, in order.

require_relative "scenario"
include Scenario

SENDS = 200
DESTINATION = "/queue/ruby-receipt-while-subscribed".freeze

Scenario.run do
  client, inbox = connect(Scenario.hosts, "client")
  subscribe(client, inbox, DESTINATION, "ruby-self")
  SENDS.times do |i|
    publish(client, inbox, DESTINATION, "self #{i}", "x-index" => i.to_s)
  end
  log "#{SENDS} SENDs to a queue this connection is subscribed to, each with its RECEIPT"
  inbox.wait_for_messages(SENDS)
  got = inbox.quiet_for(0.5)
  check(got.size == SENDS, "#{got.size} messages for #{SENDS} sent")
  check(got.map(&:body) == (0...SENDS).map { |i| "self #{i}" },
        "messages out of order or changed: #{got.map(&:body).first(20)}")
  check(inbox.receipts.uniq.size == SENDS, "#{inbox.receipts.uniq.size} distinct receipts")
  client.close
  log "#{SENDS} messages received once each, in order"
end
