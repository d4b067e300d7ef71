# Ruby stomp gem scenario: request/reply over a temporary queue.
#
# The requester subscribes to /temp-queue/replies and sends a request to a queue with
# reply-to:/temp-queue/replies. The responder, on another connection, gets the request with
# its reply-to header rewritten to a name that reaches the requester's temporary queue from
# any connection (ActiveMQ: /remote-temp-queue/ID:...), and sends its reply there with the
# request's correlation-id; the requester gets the reply on its temporary queue subscription.
#
# Not run by tests/tests/other_clients.rs yet: written ahead of brokerd's support and checked
# against ActiveMQ 5.17.2 (Debian's activemq), whose behaviour it asserts.

require_relative "scenario"
include Scenario

REQUESTS = "/queue/ruby-requests".freeze
REPLY_TO = "/temp-queue/replies".freeze

Scenario.run do
  hosts = Scenario.hosts
  requester, replies = connect(hosts, "requester")
  subscribe(requester, replies, REPLY_TO, "replies")
  publish(requester, replies, REQUESTS, "what is 6 times 7?",
          "reply-to" => REPLY_TO, "correlation-id" => "question-1")
  responder, requests = connect(hosts, "responder")
  subscribe(responder, requests, REQUESTS, "requests")
  request = requests.wait_for_messages(1).first
  reply_to = request.headers["reply-to"]
  log "the responder got reply-to:#{reply_to} (the requester sent #{REPLY_TO})"
  check(reply_to && reply_to != REPLY_TO,
        "reply-to not rewritten to a name other connections can use: #{request.headers}")
  check(request.headers["correlation-id"] == "question-1", "correlation-id: #{request.headers}")
  publish(responder, requests, reply_to, "42",
          "correlation-id" => request.headers["correlation-id"])
  reply = replies.wait_for_messages(1).first
  log "the requester got the reply with headers #{reply.headers}"
  check(reply.body == "42", "reply body #{reply.body.inspect}")
  check(reply.headers["correlation-id"] == "question-1", "correlation-id: #{reply.headers}")
  check(reply.headers["subscription"] == "replies", "subscription header: #{reply.headers}")
  requester.close
  responder.close
  log "the reply came back through the rewritten reply-to"
end
