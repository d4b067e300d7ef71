<?php
/*
 * PECL stomp scenario: SEND with a receipt to a queue the same connection is subscribed to.
 *
 * The broker owes this connection two frames for every SEND: the RECEIPT and the MESSAGE the
 * SEND causes, often in one read. send() reads frames until its RECEIPT, keeping any MESSAGE
 * it reads on the way for readFrame(). ActiveMQ writes the RECEIPT first, and a newline after
 * each frame's NUL, without which the extension loses the second frame of the pair (see
 * scenario.php). SENDS times, so that any race shows: every send() must get its RECEIPT, and
 * readFrame() then every message exactly once, in order.
 */

declare(strict_types=1);

require __DIR__ . '/scenario.php';

const SENDS = 200;
const DESTINATION = '/queue/php-receipt-while-subscribed';

run(function () use ($argv) {
    $stomp = connect(broker_uris($argv));
    subscribe_receipted($stomp, DESTINATION, 'php-self', ['ack' => 'auto']);
    for ($i = 0; $i < SENDS; $i++) {
        send_receipted($stomp, DESTINATION, "self $i", "self-$i", ['x-index' => (string) $i]);
    }
    say(SENDS . ' SENDs to a queue this connection is subscribed to, each with its RECEIPT');
    $got = read_messages($stomp, SENDS, 'the subscriber');
    check(array_column($got, 'body') === array_map(fn ($i) => "self $i", range(0, SENDS - 1)),
        'messages out of order or changed: ' . show(array_slice(bodies($got), 0, 20)));
    $more = frames_within($stomp, 0.5);
    check(!$more, 'frames after the last message: ' . show(bodies($more)));
    unset($stomp);
    say(SENDS . ' messages received once each, in order');
});
