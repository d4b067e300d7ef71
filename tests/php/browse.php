<?php
/*
 * PECL stomp scenario: a `browser:true` subscription to a queue.
 *
 * Three messages wait on a queue. A browsing subscription gets each of them, then one more
 * MESSAGE marking the end of the browse, as ActiveMQ 5.17 sends it: an empty body and exactly
 * the headers browser:end, destination (the queue), message-id:0 and subscription (the
 * browsing subscription's id). Nothing comes after it, and browsing consumed nothing: an
 * ordinary consumer then gets all three.
 *
 * ActiveMQ refuses browsing over STOMP 1.0 ("Queue Browser feature only valid for Stomp v1.1+
 * clients!"), the extension's own version, so the browser connects asking for 1.1; the
 * extension does not decode 1.1's header escapes, which no header compared here needs.
 *
 * Not run by tests/tests/other_clients.rs yet: written ahead of brokerd's support and checked
 * against ActiveMQ 5.17.2 (Debian's activemq), whose behaviour it asserts.
 */

declare(strict_types=1);

require __DIR__ . '/scenario.php';

const DESTINATION = '/queue/php-browse';
const BODIES = ['first', 'second', 'third'];

run(function () use ($argv) {
    $uris = broker_uris($argv);
    $producer = connect($uris);
    foreach (BODIES as $i => $body) {
        send_receipted($producer, DESTINATION, $body, "browse-$i");
    }
    $browser = connect($uris, ['accept-version' => '1.1', 'host' => 'localhost']);
    subscribe($browser, DESTINATION, 'browse', ['ack' => 'auto', 'browser' => 'true']);
    $got = read_messages($browser, count(BODIES) + 1, 'the browser');
    foreach ($got as $m) {
        say('browsed ' . show($m->body) . ': ' . show($m->headers));
    }
    $more = frames_within($browser, 1.0);
    check(!$more, 'frames after the end marker: ' . show(bodies($more)));
    $browsed = array_slice($got, 0, count(BODIES));
    check(array_column($browsed, 'body') === BODIES,
        'browsed ' . show(array_column($got, 'body')));
    check(!array_filter($browsed, fn ($m) => isset($m->headers['browser'])),
        'a browsed message carries a browser header: ' . show(array_column($got, 'headers')));
    $marker = end($got);
    $want = ['browser' => 'end', 'destination' => DESTINATION, 'message-id' => '0',
             'subscription' => 'browse'];
    $headers = $marker->headers;
    ksort($headers);
    check($headers === $want && (string) $marker->body === '',
        'the last frame is not the end marker ' . show($want) . ': ' . show($marker->headers)
        . ' ' . show($marker->body));
    $consumer = connect($uris);
    subscribe($consumer, DESTINATION, 'consume', ['ack' => 'auto']);
    $consumed = read_messages($consumer, count(BODIES), 'the consumer after the browse');
    $more = frames_within($consumer, 1.0);
    check(array_column($consumed, 'body') === BODIES && !$more,
        'after the browse a consumer got ' . show(bodies([...$consumed, ...$more])));
    unset($producer, $browser, $consumer);
    say('browsed a snapshot and its end marker; the messages stayed on the queue');
});
