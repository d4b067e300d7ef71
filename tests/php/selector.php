<?php
/*
 * PECL stomp scenario: a subscription with a JMS selector in its `selector` header.
 *
 * Five messages go to a queue, with a custom `color` header and the STOMP `priority` header
 * (JMSPriority to the selector). A consumer subscribed with
 * "color = 'red' AND JMSPriority > 4" gets only the two that match; the three that do not
 * (red at priority 4, blue at 9, no color at 9) stay on the queue, and a second consumer
 * without a selector, subscribed while the first still is, gets exactly those.
 *
 * Not run by tests/tests/other_clients.rs yet: written ahead of brokerd's support and checked
 * against ActiveMQ 5.17.2 (Debian's activemq), whose behaviour it asserts.
 */

declare(strict_types=1);

require __DIR__ . '/scenario.php';

const DESTINATION = '/queue/php-selector';
const SELECTOR = "color = 'red' AND JMSPriority > 4";
const MESSAGES = [
    'red-9' => ['color' => 'red', 'priority' => '9'],
    'red-4' => ['color' => 'red', 'priority' => '4'],
    'blue-9' => ['color' => 'blue', 'priority' => '9'],
    'none-9' => ['priority' => '9'],
    'red-5' => ['color' => 'red', 'priority' => '5'],
];
const MATCHING = ['red-5', 'red-9'];

/** The bodies of `$frames`, sorted. */
function sorted_bodies(array $frames): array
{
    $bodies = array_column($frames, 'body');
    sort($bodies);
    return $bodies;
}

run(function () use ($argv) {
    $uris = broker_uris($argv);
    $producer = connect($uris);
    foreach (MESSAGES as $body => $headers) {
        send_receipted($producer, DESTINATION, $body, "selector-$body", $headers);
    }
    $selecting = connect($uris);
    subscribe($selecting, DESTINATION, 'red-and-urgent',
        ['ack' => 'auto', 'selector' => SELECTOR]);
    $got = read_messages($selecting, count(MATCHING), 'the selecting consumer');
    $got = [...$got, ...frames_within($selecting, 1.0)];
    foreach ($got as $m) {
        say("the selector let through {$m->body}: color " . ($m->headers['color'] ?? '-')
            . ", priority {$m->headers['priority']}");
    }
    check(sorted_bodies($got) === MATCHING,
        'the selecting consumer got ' . show(bodies($got)) . ', want ' . show(MATCHING));
    $other = connect($uris);
    subscribe($other, DESTINATION, 'everything', ['ack' => 'auto']);
    $left = array_values(array_diff(array_keys(MESSAGES), MATCHING));
    sort($left);
    $rest = read_messages($other, count($left), 'the other consumer');
    $rest = [...$rest, ...frames_within($other, 1.0)];
    say('left on the queue for another consumer: ' . show(array_column($rest, 'body')));
    check(sorted_bodies($rest) === $left,
        'the other consumer got ' . show(bodies($rest)) . ', want ' . show($left));
    $more = frames_within($selecting, 0.5);
    check(!$more, 'the selecting consumer got more: ' . show(bodies($more)));
    unset($producer, $selecting, $other);
    say('the selector took only its matches; the rest stayed for another consumer');
});
