"""stomp.py scenario: failover across a SIGKILL of the active node, no receipted message lost.

stomp.py gets every node's address as its host list and tries them in turn when it
(re)connects. A producer sends --count persistent messages with receipts, at most --window
unreceipted at a time. After --kill-after receipts it prints the line `KILL`: the test driving
this script then SIGKILLs the active node's lockd while the producer keeps sending. When the
connection drops, the producer reconnects through the host list and resends every message whose
receipt had not arrived (at-least-once, as a failover client does).

Once every message is receipted, a consumer on the same host list takes the queue and ACKs
each message. Checks: every receipted message is received (none lost); a message arrives more
than once only if it was sent more than once (a resend after the failover), since nothing was
acked before the failover; and the failover really happened.
"""

import time

import stomp

from scenario import WAIT, Recorder, ScenarioFailed, check, log, parse_args, run

DESTINATION = "/queue/failover"


def options(parser):
    parser.add_argument("--count", type=int, default=300, help="messages to send")
    parser.add_argument("--kill-after", type=int, default=50, help="receipts before KILL")
    parser.add_argument("--window", type=int, default=20, help="most unreceipted messages")


class Client:
    """One stomp.py connection over the host list, reconnected when it drops."""

    def __init__(self, hosts):
        # Short reconnect sleeps: stomp.py sleeps at least 0.2 s between rounds of the list.
        self.conn = stomp.Connection12(
            hosts,
            reconnect_sleep_initial=0.05,
            reconnect_sleep_increase=0.0,
            reconnect_sleep_jitter=0.1,
            reconnect_sleep_max=0.2,
            reconnect_attempts_max=150,
            timeout=5.0,
        )
        self.recorder = Recorder("failover")
        self.conn.set_listener("recorder", self.recorder)
        self.disconnects_seen = 0
        self.connect()

    def connect(self):
        """Connects to whichever node answers, retrying the whole list for at most 30 s."""
        started = time.monotonic()
        while True:
            try:
                self.conn.connect(wait=True)
                if self.conn.is_connected():
                    break
            except (stomp.exception.StompException, OSError) as e:
                # OSError: stomp.py's receiver thread for the dropped socket can close the
                # socket a new CONNECT just opened (EBADF, seen once in CI): try again.
                last = f"{type(e).__name__}: {e}"
            else:
                last = "not connected after CONNECT"
            if time.monotonic() - started > 30:
                raise ScenarioFailed(f"no node answered within 30 s ({last})")
            time.sleep(0.1)
        host, port = self.conn.transport.current_host_and_port
        log(f"connected to {host}:{port} after {time.monotonic() - started:.2f} s")

    def dropped(self):
        """Whether the connection dropped since the last reconnect."""
        with self.recorder.cond:
            return self.recorder.disconnects > self.disconnects_seen

    def reconnect(self):
        # Wait for stomp.py's receiver thread to finish with the old socket before starting
        # the next one (it reports the disconnect as it exits).
        self.recorder.wait_until("the dropped connection to be reported",
                                 lambda: self.recorder.disconnects > self.disconnects_seen)
        with self.recorder.cond:
            self.disconnects_seen = self.recorder.disconnects
        # A report that arrives after the reconnect (a loaded machine delays stomp.py's old
        # receiver thread) is about the old socket: a second CONNECT on the live one would be
        # refused. The resend that follows is harmless (at-least-once) and counted as such.
        if self.conn.is_connected():
            log("disconnect report about the previous socket; still connected")
            return
        self.connect()


def produce(client, count, kill_after, window):
    """Sends `count` messages until each is receipted. Returns the indexes sent more than once
    and those receipted before the connection first dropped."""
    recorder, conn = client.recorder, client.conn
    unreceipted = {}  # index -> receipt id of its latest SEND
    receipted = set()
    resent = set()
    attempts = {}
    next_index = 0
    failovers = 0
    told = False
    before_failover = set()
    deadline = time.monotonic() + 120

    def send(i):
        attempts[i] = attempts.get(i, 0) + 1
        if attempts[i] > 1:
            resent.add(i)
        receipt = f"m{i}-a{attempts[i]}"
        unreceipted[i] = receipt
        try:
            conn.send(DESTINATION, f"msg {i}",
                      headers={"persistent": "true", "receipt": receipt, "x-index": str(i)})
        except Exception as e:  # the socket died under us: resent after the reconnect
            log(f"SEND of {i} failed ({type(e).__name__}); will resend")

    while len(receipted) < count or failovers == 0:
        check(time.monotonic() < deadline,
              f"producer: not done after 120 s: {len(receipted)} of {count} receipted, "
              f"{failovers} failovers, KILL printed: {told}")
        with recorder.cond:
            for i, receipt in list(unreceipted.items()):
                if receipt in recorder.receipts:
                    receipted.add(i)
                    del unreceipted[i]
            errors = recorder.error_texts()
        check(not errors, f"producer: ERROR frames {errors}")
        if client.dropped():
            failovers += 1
            if failovers == 1:
                before_failover = set(receipted)
            log(f"connection dropped: {len(receipted)} receipted, {len(unreceipted)} in flight")
            client.reconnect()
            for i in sorted(unreceipted):
                send(i)
            log(f"resent {len(unreceipted)} unreceipted messages")
            continue
        if not told and len(receipted) >= kill_after:
            log("KILL")
            told = True
        if next_index < count and len(unreceipted) < window:
            send(next_index)
            next_index += 1
            if told:
                time.sleep(0.005)  # a gentle rate, so the kill lands mid-stream
        else:
            with recorder.cond:
                recorder.cond.wait(0.1)
    log(f"producer: all {count} receipted, {len(resent)} resent, {failovers} failover(s)")
    return resent, before_failover


def consume(client, count, resent, before_failover):
    recorder, conn = client.recorder, client.conn
    recorder.take()
    conn.subscribe(DESTINATION, id="consumer", ack="client-individual",
                   headers={"receipt": "consumer-sub"})
    recorder.wait_for_receipt("consumer-sub")
    received = {}
    acked = 0
    started = time.monotonic()
    quiet_since = None
    while True:
        for m in recorder.take():
            i = int(m.body.split()[1])
            received[i] = received.get(i, 0) + 1
            conn.ack(m.headers["ack"])
            acked += 1
        missing = [i for i in range(count) if i not in received]
        if not missing:
            # Everything is in; a moment more so late duplicates show up too.
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                break
        elif time.monotonic() - started > WAIT:
            lost_before = sum(1 for i in missing if i in before_failover)
            raise ScenarioFailed(
                f"LOST {len(missing)} receipted messages across the failover: {lost_before} of "
                f"the {len(before_failover)} receipted before it, {len(missing) - lost_before} "
                f"receipted after it (none arrived within {WAIT:.0f} s); "
                f"first lost: {missing[:20]}")
        with recorder.cond:
            recorder.cond.wait(0.1)
    check(not client.dropped(), "consumer: the connection dropped while consuming")
    duplicated = sorted(i for i, n in received.items() if n > 1)
    wrongly = [i for i in duplicated if i not in resent]
    check(not wrongly, f"messages receipted on their only SEND delivered twice: {wrongly}")
    unknown = [i for i in received if not 0 <= i < count]
    check(not unknown, f"messages nobody sent: {unknown}")
    conn.disconnect(receipt="consumer-bye")
    recorder.wait_for_receipt("consumer-bye")
    log(f"consumer: all {count} receipted messages received and acked ({acked} deliveries, "
        f"{len(duplicated)} duplicates, all of resent messages)")


def main():
    args = parse_args(__doc__, options)
    check(len(args.hosts) >= 2, "failover needs at least two nodes")
    client = Client(args.hosts)
    resent, before_failover = produce(client, args.count, args.kill_after, args.window)
    consume(client, args.count, resent, before_failover)


if __name__ == "__main__":
    run(main)
