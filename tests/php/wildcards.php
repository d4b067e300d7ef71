<?php
/*
 * PECL stomp scenario: ActiveMQ's destination wildcards, `.` separating the parts of a name,
 * `*` matching one part and `>` the rest.
 *
 * A subscription to /topic/php-foo.* gets what is sent to /topic/php-foo.a and
 * /topic/php-foo.b, not /topic/php-foo (`*` is exactly one part), /topic/php-foo.a.deeper nor
 * /topic/php-bar.a; one to /queue/php-orders.> gets /queue/php-orders.us,
 * /queue/php-orders.eu.fr and, as ActiveMQ 5.17 does, /queue/php-orders itself (`>` is zero
 * or more parts), not /queue/php-orders-archive.us. Each MESSAGE's destination header is the
 * concrete destination it was sent to, and its subscription header the wildcard
 * subscription's id.
 *
 * Not run by tests/tests/other_clients.rs yet: written ahead of brokerd's support and checked
 * against ActiveMQ 5.17.2 (Debian's activemq), whose behaviour it asserts.
 */

declare(strict_types=1);

require __DIR__ . '/scenario.php';

const TOPIC_PATTERN = '/topic/php-foo.*';
const QUEUE_PATTERN = '/queue/php-orders.>';
const TOPIC_MATCHES = ['/topic/php-foo.a', '/topic/php-foo.b'];
const QUEUE_MATCHES = ['/queue/php-orders.us', '/queue/php-orders.eu.fr', '/queue/php-orders'];
const OTHERS = ['/topic/php-foo', '/topic/php-foo.a.deeper', '/topic/php-bar.a',
                '/queue/php-orders-archive.us'];

run(function () use ($argv) {
    $uris = broker_uris($argv);
    $consumer = connect($uris);
    // subscribe() waits for its RECEIPT: the topic subscription is in place before any SEND.
    subscribe_receipted($consumer, TOPIC_PATTERN, 'topic-wild', ['ack' => 'auto']);
    subscribe_receipted($consumer, QUEUE_PATTERN, 'queue-wild', ['ack' => 'auto']);
    $producer = connect($uris);
    foreach ([...OTHERS, ...TOPIC_MATCHES, ...QUEUE_MATCHES] as $i => $destination) {
        send_receipted($producer, $destination, "to $destination", "wild-$i");
    }
    $matches = [...TOPIC_MATCHES, ...QUEUE_MATCHES];
    $got = read_messages($consumer, count($matches), 'the wildcard subscriptions');
    $more = frames_within($consumer, 1.0);
    check(!$more, 'more than the matches: ' . show(bodies($more)));
    foreach ($got as $m) {
        $h = $m->headers;
        say("{$h['subscription']} got \"{$m->body}\": destination {$h['destination']}");
        check($h['destination'] === substr($m->body, strlen('to ')),
            'destination header is not the concrete destination: ' . show($h));
        $want = str_starts_with($h['destination'], '/topic/') ? 'topic-wild' : 'queue-wild';
        check(($h['subscription'] ?? null) === $want, 'subscription header: ' . show($h));
    }
    $bodies = array_column($got, 'body');
    $want = array_map(fn ($d) => "to $d", $matches);
    sort($bodies);
    sort($want);
    check($bodies === $want, 'the wildcard subscriptions got ' . show($bodies)
        . ', want what was sent to ' . show($matches));
    unset($producer, $consumer);
    say('each wildcard subscription got exactly its matches, under their concrete names');
});
