<?php
/*
 * Shared pieces of the scenarios written with PHP's PECL stomp extension (Debian's
 * php8.2-stomp, 2.0.3, which speaks STOMP 1.0): the broker addresses from the command line,
 * connections as the extension's users open them, reads with a deadline, and a clear way to
 * fail.
 *
 * Every scenario takes the broker addresses as HOST:PORT arguments (the Rust test passes the
 * cluster's nodes; the extension has no failover, so only the first is used), prints OK and
 * exits 0 when every check held, and exits 1 with a message on stderr otherwise. Every wait
 * is bounded, so a broker that goes silent fails the scenario instead of hanging it.
 *
 * The extension is synchronous: send(), subscribe() and ack() with a `receipt` header read
 * frames until that RECEIPT and keep any MESSAGE read on the way for readFrame(); they return
 * false when the RECEIPT does not come within the read timeout. readFrame() returns false on
 * a timeout and also on a frame it could not parse (without setting error()), so a false
 * well before the read timeout means the extension lost a frame.
 *
 * The extension counts on a newline after each frame's NUL, as ActiveMQ writes every frame
 * (STOMP allows the NUL alone): after a body read by its content-length it reads two more
 * bytes and drops the frame unless they are NUL and newline; after a body read up to its NUL
 * it drops the next byte, whatever it is. Where a broker ends frames with the NUL alone, the
 * extension loses a frame, or the first byte of the next one, whenever that next frame is
 * already in the socket: a burst of messages, or a RECEIPT written with a MESSAGE.
 */

declare(strict_types=1);

/** Long enough for a debug build on a busy 2-core machine; never a measure of speed. */
const WAIT = 20;

/** A check did not hold; the message says which and what was seen. */
final class ScenarioFailed extends Exception
{
}

function check(bool $condition, string $message): void
{
    if (!$condition) {
        throw new ScenarioFailed($message);
    }
}

function say(string $text): void
{
    echo $text, "\n";
}

/** The HOST:PORT arguments as the extension's broker URIs. */
function broker_uris(array $argv): array
{
    $hosts = array_slice($argv, 1);
    $malformed = fn ($h) => str_starts_with($h, '-') || !str_contains($h, ':');
    if (!$hosts || array_filter($hosts, $malformed)) {
        fwrite(STDERR, "usage: " . basename($argv[0]) . " HOST:PORT...\n");
        exit(2);
    }
    return array_map(fn ($h) => "tcp://$h", $hosts);
}

/** Runs `$main`, turning a failed check or an unexpected error into exit status 1. */
function run(callable $main): void
{
    if (!extension_loaded('stomp')) {
        fwrite(STDERR, "FAILED: the stomp extension is not loaded: apt-get install php8.2-stomp\n");
        exit(1);
    }
    try {
        $main();
    } catch (ScenarioFailed $e) {
        fwrite(STDERR, "FAILED: {$e->getMessage()}\n");
        exit(1);
    } catch (Throwable $e) { // a StompException: a refused connection, a broker's ERROR
        $details = $e instanceof StompException ? " ({$e->getDetails()})" : '';
        fwrite(STDERR, "FAILED with " . get_class($e) . ": {$e->getMessage()}$details\n");
        fwrite(STDERR, $e->getTraceAsString() . "\n");
        exit(1);
    }
    say('OK');
}

/**
 * A connection to the first broker, with reads bounded by WAIT; `$headers` go on the CONNECT
 * frame (the extension sends no accept-version: the broker speaks STOMP 1.0 to it).
 */
function connect(array $uris, array $headers = []): Stomp
{
    $stomp = new Stomp($uris[0], '', '', $headers);
    $stomp->setReadTimeout(WAIT);
    return $stomp;
}

/** SEND with a receipt, which send() waits for: after this the broker has the message. */
function send_receipted(Stomp $stomp, string $destination, string $body, string $receipt,
                        array $headers = []): void
{
    $asked = microtime(true);
    $sent = $stomp->send($destination, $body, $headers + ['receipt' => $receipt]);
    check($sent, "send() to $destination " . no_receipt($stomp, $receipt, $asked));
}

/**
 * SUBSCRIBE without a receipt: enough for a queue, which keeps its messages until then.
 * Without an `ack` header the extension asks for ack:client.
 */
function subscribe(Stomp $stomp, string $destination, string $id, array $headers = []): void
{
    check($stomp->subscribe($destination, $headers + ['id' => $id]),
        "subscribe() to $destination returned false; error(): " . show($stomp->error()));
}

/**
 * SUBSCRIBE with a receipt, which subscribe() waits for: after this it is in place, as a
 * topic subscription must be before anything is sent to it.
 */
function subscribe_receipted(Stomp $stomp, string $destination, string $id,
                             array $headers = []): void
{
    $asked = microtime(true);
    $headers += ['id' => $id, 'receipt' => "sub-$id"];
    $subscribed = $stomp->subscribe($destination, $headers);
    check($subscribed, "subscribe() to $destination " . no_receipt($stomp, "sub-$id", $asked));
}

/** How a call that waited for RECEIPT `$receipt` since `$asked` failed, for its message. */
function no_receipt(Stomp $stomp, string $receipt, float $asked): string
{
    return sprintf(
        "returned false after %.2f s (read timeout %d s): no RECEIPT %s, or a frame before it "
        . "the extension could not parse; error(): %s",
        microtime(true) - $asked, WAIT, $receipt, show($stomp->error())
    );
}

/**
 * The next `$count` MESSAGE frames, each within the read timeout; fails, saying how the
 * extension answered, if one does not come or another kind of frame does.
 */
function read_messages(Stomp $stomp, int $count, string $what): array
{
    $messages = [];
    while (count($messages) < $count) {
        $asked = microtime(true);
        $frame = $stomp->readFrame();
        $took = microtime(true) - $asked;
        check($frame !== false, sprintf(
            "%s: readFrame() returned false after %.2f s (read timeout %d s) with %d of %d "
            . "messages read; error(): %s",
            $what, $took, WAIT, count($messages), $count, show($stomp->error())
        ));
        check($frame->command === 'MESSAGE',
            "$what: a {$frame->command} frame where a MESSAGE was due: "
            . show($frame->headers));
        $messages[] = $frame;
    }
    return $messages;
}

/** Frames that arrive within `$seconds`, for checks that nothing (more) comes. */
function frames_within(Stomp $stomp, float $seconds): array
{
    $stomp->setReadTimeout((int) $seconds, (int) (fmod($seconds, 1.0) * 1e6));
    $frames = [];
    while (($frame = $stomp->readFrame()) !== false) {
        $frames[] = $frame;
    }
    $stomp->setReadTimeout(WAIT);
    return $frames;
}

/** `$value` as JSON, for messages. */
function show(mixed $value): string
{
    return json_encode($value, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
}

/** The bodies of `$frames`, for messages. */
function bodies(array $frames): array
{
    return array_map(fn ($f) => strlen((string) $f->body) > 40
        ? strlen($f->body) . ' bytes' : $f->body, $frames);
}
