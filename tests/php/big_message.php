<?php
/*
 * PECL stomp scenario: a 16 MiB message sent with a receipt and received intact.
 *
 * The body is 16 MiB of pseudo-random bytes (NULs included, so only its content-length can
 * delimit it); the consumer on another connection checks its length and SHA-256 against the
 * sender's, and the sender's checksum header, passed through unchanged.
 */

declare(strict_types=1);

require __DIR__ . '/scenario.php';

const SIZE = 16 * 1024 * 1024;
const DESTINATION = '/queue/php-big-message';

run(function () use ($argv) {
    $uris = broker_uris($argv);
    mt_srand(16);
    $body = '';
    while (strlen($body) < SIZE) {
        $body .= pack('N*', ...array_map(fn () => mt_rand(), range(1, 4096)));
    }
    $body = substr($body, 0, SIZE);
    $sha256 = hash('sha256', $body);
    $producer = connect($uris);
    $started = microtime(true);
    send_receipted($producer, DESTINATION, $body, 'php-big', ['x-sha256' => $sha256]);
    say(sprintf('%d bytes sent, RECEIPT after %.1f s', SIZE, microtime(true) - $started));
    $consumer = connect($uris);
    subscribe($consumer, DESTINATION, 'php-big', ['ack' => 'auto']);
    [$got] = read_messages($consumer, 1, 'consumer');
    check(strlen($got->body) === SIZE, 'received ' . strlen($got->body) . ' bytes, sent ' . SIZE);
    check(hash('sha256', $got->body) === $sha256, 'the body changed on the way');
    check(($got->headers['x-sha256'] ?? null) === $sha256,
        'checksum header changed: ' . show($got->headers));
    unset($producer, $consumer);
    say(sprintf('%d bytes received intact (SHA-256 %s...)', SIZE, substr($sha256, 0, 16)));
});
