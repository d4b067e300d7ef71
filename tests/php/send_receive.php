<?php
/*
 * PECL stomp scenario: SEND with receipts to a queue, received on another connection.
 *
 * A producer sends COUNT messages to a queue, each with a receipt send() waits for and custom
 * headers; a consumer on another connection then subscribes as the extension's own example
 * does (no receipt, the default ack:client), reads every one in order with its body
 * (non-ASCII included) and its custom headers unchanged, and ACKs each with the frame it read.
 * The broker delivers the queued messages back to back: the extension must find where each
 * ends.
 */

declare(strict_types=1);

require __DIR__ . '/scenario.php';

const COUNT = 10;
const DESTINATION = '/queue/php-send-receive';

run(function () use ($argv) {
    $uris = broker_uris($argv);
    $producer = connect($uris);
    $bodies = [];
    for ($i = 0; $i < COUNT; $i++) {
        $bodies[] = "php message $i: caf\u{e9} \u{2713}";
        send_receipted($producer, DESTINATION, $bodies[$i], "php-send-$i",
            ['x-index' => (string) $i, 'x-customer' => 'ACME Corp']);
    }
    say(COUNT . ' messages sent, each with its RECEIPT');
    $consumer = connect($uris);
    subscribe($consumer, DESTINATION, 'php-consumer');
    $got = [];
    foreach (read_messages($consumer, COUNT, 'consumer') as $i => $frame) {
        $h = $frame->headers;
        check($h['destination'] === DESTINATION, 'destination header: ' . show($h));
        check(($h['x-index'] ?? null) === (string) $i && ($h['x-customer'] ?? null) === 'ACME Corp',
            'custom headers not passed through unchanged: ' . show($h));
        check(isset($h['message-id']), 'no message-id: ' . show($h));
        check(($h['subscription'] ?? null) === 'php-consumer', 'subscription header: ' . show($h));
        check($consumer->ack($frame), "ack() of message $i returned false");
        $got[] = $frame;
    }
    check(array_column($got, 'body') === $bodies,
        'bodies differ: ' . show(array_column($got, 'body')));
    $ids = array_unique(array_map(fn ($f) => $f->headers['message-id'], $got));
    check(count($ids) === COUNT, 'message ids not unique: ' . show($ids));
    $more = frames_within($consumer, 0.5);
    check(!$more, 'frames after the last message: ' . show(bodies($more)));
    unset($producer, $consumer); // the destructor sends DISCONNECT
    say(COUNT . ' messages received in order with their custom headers, and ACKed');
});
