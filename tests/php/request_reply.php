<?php
/*
 * PECL stomp scenario: request/reply over a temporary queue.
 *
 * The requester subscribes to /temp-queue/replies and sends a request to a queue with
 * reply-to:/temp-queue/replies. The responder, on another connection, gets the request with
 * its reply-to header rewritten to a name that reaches the requester's temporary queue from
 * any connection (ActiveMQ: /remote-temp-queue/ID:...), and sends its reply there with the
 * request's correlation-id; the requester gets the reply on its temporary queue subscription.
 *
 * Not run by tests/tests/other_clients.rs yet: written ahead of brokerd's support and checked
 * against ActiveMQ 5.17.2 (Debian's activemq), whose behaviour it asserts.
 */

declare(strict_types=1);

require __DIR__ . '/scenario.php';

const REQUESTS = '/queue/php-requests';
const REPLY_TO = '/temp-queue/replies';

run(function () use ($argv) {
    $uris = broker_uris($argv);
    $requester = connect($uris);
    subscribe_receipted($requester, REPLY_TO, 'replies', ['ack' => 'auto']);
    send_receipted($requester, REQUESTS, 'what is 6 times 7?', 'request-1',
        ['reply-to' => REPLY_TO, 'correlation-id' => 'question-1']);
    $responder = connect($uris);
    subscribe($responder, REQUESTS, 'requests', ['ack' => 'auto']);
    [$request] = read_messages($responder, 1, 'the responder');
    $replyTo = $request->headers['reply-to'] ?? null;
    say("the responder got reply-to:$replyTo (the requester sent " . REPLY_TO . ')');
    check($replyTo !== null && $replyTo !== REPLY_TO,
        'reply-to not rewritten to a name other connections can use: '
        . show($request->headers));
    check(($request->headers['correlation-id'] ?? null) === 'question-1',
        'correlation-id: ' . show($request->headers));
    send_receipted($responder, $replyTo, '42', 'reply-1',
        ['correlation-id' => $request->headers['correlation-id']]);
    [$reply] = read_messages($requester, 1, 'the requester');
    say('the requester got the reply with headers ' . show($reply->headers));
    check($reply->body === '42', 'reply body ' . show($reply->body));
    check(($reply->headers['correlation-id'] ?? null) === 'question-1',
        'correlation-id: ' . show($reply->headers));
    check(($reply->headers['subscription'] ?? null) === 'replies',
        'subscription header: ' . show($reply->headers));
    unset($requester, $responder);
    say('the reply came back through the rewritten reply-to');
});
