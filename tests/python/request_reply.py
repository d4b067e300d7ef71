"""stomp.py scenario: request/reply over a temporary queue.

The requester subscribes to /temp-queue/py-replies and sends a request to a queue with
reply-to:/temp-queue/py-replies. The responder, on another connection, gets the request with
its reply-to header rewritten to a name that reaches the requester's temporary queue from any
connection (as ActiveMQ does: /remote-temp-queue/ID:...), and sends its reply there with the
request's correlation-id. The requester gets the reply on its temporary queue subscription,
under the name it used: destination /temp-queue/py-replies.
"""

from scenario import check, connect, disconnect, log, parse_args, run, send, subscribe

REQUESTS = "/queue/py-requests"
REPLY_TO = "/temp-queue/py-replies"


def main():
    hosts = parse_args(__doc__).hosts
    requester, replies = connect(hosts, "requester")
    subscribe(requester, replies, REPLY_TO, "replies")
    send(requester, replies, REQUESTS, "what is 6 times 7?", "request",
         **{"reply-to": REPLY_TO, "correlation-id": "question-1"})

    responder, requests = connect(hosts, "responder")
    subscribe(responder, requests, REQUESTS, "requests")
    [request] = requests.wait_for_messages(1)
    reply_to = request.headers.get("reply-to")
    log(f"the responder got reply-to:{reply_to} (the requester sent {REPLY_TO})")
    check(reply_to is not None and reply_to.startswith("/remote-temp-queue/"),
          f"reply-to not rewritten to a /remote-temp-queue/ name: {request.headers}")
    check(request.headers.get("correlation-id") == "question-1",
          f"correlation-id: {request.headers}")
    send(responder, requests, reply_to, "42", "reply",
         **{"correlation-id": request.headers["correlation-id"]})

    [reply] = replies.wait_for_messages(1)
    log(f"the requester got the reply with headers {reply.headers}")
    check(reply.body == "42", f"reply body {reply.body!r}")
    check(reply.headers.get("correlation-id") == "question-1", f"correlation-id: {reply.headers}")
    check(reply.headers.get("subscription") == "replies", f"subscription header: {reply.headers}")
    check(reply.headers.get("destination") == REPLY_TO,
          f"the reply's destination is not the name the requester used: {reply.headers}")
    disconnect(responder, requests)
    disconnect(requester, replies)
    log("the reply came back through the rewritten reply-to")


if __name__ == "__main__":
    run(main)
