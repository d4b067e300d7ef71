# Ruby stomp gem scenario: a 16 MiB message sent with a receipt and received intact.
#
# The body is 16 MiB of pseudo-random bytes (NULs and invalid UTF-8 included, so only its
# content-length can delimit it); the consumer on another connection checks its length and
# SHA-256 against the sender's, and the sender's checksum header, passed through unchanged.

require "digest"
require_relative "scenario"
include Scenario

SIZE = 16 * 1024 * 1024
DESTINATION = "/queue/ruby-big-message".freeze

Scenario.run do
  hosts = Scenario.hosts
  body = Random.new(16).bytes(SIZE)
  sha256 = Digest::SHA256.hexdigest(body)
  producer, receipts = connect(hosts, "producer")
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  publish(producer, receipts, DESTINATION, body, "x-sha256" => sha256)
  log "#{SIZE} bytes sent, RECEIPT after " \
      "#{(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).round(1)} s"
  consumer, inbox = connect(hosts, "consumer")
  subscribe(consumer, inbox, DESTINATION, "ruby-big")
  got = inbox.wait_for_messages(1).first
  check(got.body.bytesize == SIZE, "received #{got.body.bytesize} bytes, sent #{SIZE}")
  check(Digest::SHA256.hexdigest(got.body) == sha256, "the body changed on the way")
  check(got.headers["x-sha256"] == sha256, "checksum header changed: #{got.headers['x-sha256']}")
  producer.close
  consumer.close
  log "#{SIZE} bytes received intact (SHA-256 #{sha256[0, 16]}...)"
end
