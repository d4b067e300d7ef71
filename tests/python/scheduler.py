"""stomp.py scenario: ActiveMQ's scheduled delivery, as a stomp.py user would use it.

- AMQ_SCHEDULED_DELAY: the message comes no earlier than the delay, once, with a scheduledJobId
  and without the scheduling headers (so it cannot schedule itself again).
- AMQ_SCHEDULED_PERIOD with AMQ_SCHEDULED_REPEAT: the first delivery and each repeat, then no
  more, all under one scheduledJobId.
- Management through /topic/ActiveMQ.Scheduler.Management: BROWSE sends a copy of each pending
  job to reply-to (with its scheduledJobId and scheduling headers), REMOVE by scheduledJobId
  takes one job, REMOVEALL the rest; a BROWSE afterwards finds nothing, and none of the removed
  jobs is ever delivered.
- A bad scheduling header gets an ERROR naming the header and its value, and nothing is
  delivered.
"""

import time

import stomp

from scenario import (check, connect, disconnect, log, parse_args, run, send, subscribe)

MANAGEMENT = "/topic/ActiveMQ.Scheduler.Management"
SCHEDULING = ("AMQ_SCHEDULED_DELAY", "AMQ_SCHEDULED_PERIOD", "AMQ_SCHEDULED_REPEAT",
              "AMQ_SCHEDULED_CRON")


def delivered_plainly(frame):
    """The checks every delivery of a scheduled message must pass."""
    check(frame.headers.get("scheduledJobId"), f"no scheduledJobId: {frame.headers}")
    kept = [h for h in SCHEDULING if h in frame.headers]
    check(not kept, f"the delivery still carries {kept}: {frame.headers}")


def delayed(hosts):
    destination = "/queue/py-sched-delay"
    conn, recorder = connect(hosts, "delay")
    subscribe(conn, recorder, destination, "d")
    sent = time.monotonic()
    send(conn, recorder, destination, "delayed", "delay-send", AMQ_SCHEDULED_DELAY="1500",
         persistent="true")
    early = recorder.quiet_for(0.8)
    check(not early, f"a message delayed 1.5 s came within 0.8 s: {[m.body for m in early]}")
    got = recorder.wait_for_messages(1)
    waited = time.monotonic() - sent
    check(waited >= 1.5, f"delivered {waited:.2f} s after the SEND, before its 1.5 s delay")
    check([m.body for m in got] == ["delayed"], f"got {[m.body for m in got]}")
    delivered_plainly(got[0])
    check(got[0].headers.get("persistent") == "true", f"not persistent: {got[0].headers}")
    got = recorder.quiet_for(1.0)
    check(len(got) == 1, f"delivered {len(got)} times: {[m.headers for m in got]}")
    disconnect(conn, recorder)
    log(f"DELAY: delivered once after {waited:.2f} s, with scheduledJobId, without the "
        "scheduling headers")


def periodic(hosts):
    destination = "/queue/py-sched-periodic"
    conn, recorder = connect(hosts, "periodic")
    subscribe(conn, recorder, destination, "p")
    send(conn, recorder, destination, "tick", "periodic-send", AMQ_SCHEDULED_PERIOD="300",
         AMQ_SCHEDULED_REPEAT="2")
    recorder.wait_for_messages(3)
    got = recorder.quiet_for(1.5)
    check(len(got) == 3, f"PERIOD 300 REPEAT 2 delivered {len(got)} times, want 3")
    for frame in got:
        delivered_plainly(frame)
    ids = {m.headers["scheduledJobId"] for m in got}
    check(len(ids) == 1, f"the repeats of one job carry several ids: {ids}")
    disconnect(conn, recorder)
    log("PERIOD + REPEAT: the first delivery and two repeats under one scheduledJobId, no more")


def browse(conn, recorder, replies, reply_to, tag):
    """BROWSE into `reply_to` (which `replies` consumes); the copies that came."""
    replies.take()
    send(conn, recorder, MANAGEMENT, "", f"browse-{tag}", AMQ_SCHEDULER_ACTION="BROWSE",
         **{"reply-to": reply_to})
    return replies.quiet_for(1.5)


def management(hosts):
    destination = "/queue/py-sched-managed"
    reply_to = "/queue/py-sched-browse"
    consumer, crecorder = connect(hosts, "managed-consumer")
    subscribe(consumer, crecorder, destination, "m")
    browser, brecorder = connect(hosts, "browser")
    subscribe(browser, brecorder, reply_to, "b")
    conn, recorder = connect(hosts, "manager")
    # Due in 6 s: time enough to browse and remove them first, on a busy machine too.
    scheduled = time.monotonic()
    for i in range(3):
        send(conn, recorder, destination, f"managed {i}", f"managed-{i}",
             AMQ_SCHEDULED_DELAY=str(6000 + 100 * i), colour=f"c{i}")

    copies = browse(conn, recorder, brecorder, reply_to, "all")
    check([m.body for m in copies] == [f"managed {i}" for i in range(3)],
          f"BROWSE copies {[m.body for m in copies]}, want the three jobs in due order")
    for i, copy in enumerate(copies):
        check(copy.headers.get("scheduledJobId"), f"a copy without scheduledJobId: {copy.headers}")
        check(copy.headers.get("AMQ_SCHEDULED_DELAY") == str(6000 + 100 * i),
              f"a copy without its AMQ_SCHEDULED_DELAY: {copy.headers}")
        check(copy.headers.get("colour") == f"c{i}", f"a copy without its headers: {copy.headers}")
    ids = [m.headers["scheduledJobId"] for m in copies]
    check(len(set(ids)) == 3, f"job ids not distinct: {ids}")
    log("BROWSE: a copy of each pending job, with its scheduledJobId and headers")

    send(conn, recorder, MANAGEMENT, "", "remove-one", AMQ_SCHEDULER_ACTION="REMOVE",
         scheduledJobId=ids[0])
    copies = browse(conn, recorder, brecorder, reply_to, "after-remove")
    check([m.headers["scheduledJobId"] for m in copies] == ids[1:],
          f"after REMOVE of {ids[0]} BROWSE found {[m.headers for m in copies]}")
    log("REMOVE: the job named by scheduledJobId is gone, the others pending")

    send(conn, recorder, MANAGEMENT, "", "remove-all", AMQ_SCHEDULER_ACTION="REMOVEALL")
    copies = browse(conn, recorder, brecorder, reply_to, "after-removeall")
    check(not copies, f"after REMOVEALL BROWSE found {[m.headers for m in copies]}")
    log("REMOVEALL: nothing pending")

    left = 6.2 + 1.5 - (time.monotonic() - scheduled)
    check(left > 0, "the management steps took longer than the jobs' delay; the check that "
          "removed jobs are never delivered would prove nothing")
    got = crecorder.quiet_for(left)
    check(not got, f"removed jobs delivered: {[m.body for m in got]}")
    for c, r in ((conn, recorder), (browser, brecorder), (consumer, crecorder)):
        disconnect(c, r)
    log("none of the removed jobs was delivered past its due time")


def bad_headers(hosts):
    destination = "/queue/py-sched-bad"
    consumer, crecorder = connect(hosts, "bad-consumer")
    subscribe(consumer, crecorder, destination, "x")
    # REPEAT counts only beside a PERIOD (or DELAY, or CRON): alone, the message is ordinary.
    for header, value in (("AMQ_SCHEDULED_DELAY", "-5"), ("AMQ_SCHEDULED_PERIOD", "soon"),
                          ("AMQ_SCHEDULED_REPEAT", "-1"), ("AMQ_SCHEDULED_CRON", "61 * * * *")):
        conn, recorder = connect(hosts, f"bad-{header}")
        headers = {header: value, "receipt": "bad-send"}
        if header == "AMQ_SCHEDULED_REPEAT":
            headers["AMQ_SCHEDULED_PERIOD"] = "1000"
        conn.send(destination, "bad", headers=headers)
        recorder.wait_until(f"an ERROR for {header}={value}", lambda: recorder.errors)
        text = " ".join(recorder.error_texts()) + " " + recorder.errors[0].body
        check(header in text and value in text,
              f"the ERROR for {header}={value} does not name both: {text!r}")
        check("bad-send" not in recorder.receipts, f"{header}={value} was receipted")
        # The broker closes the connection after its ERROR, as STOMP says: a DISCONNECT may
        # find the socket already gone (closed, or dropped by stomp.py). Only that is let pass.
        try:
            conn.disconnect()
        except (OSError, stomp.exception.NotConnectedException):
            pass
        log(f"{header}={value}: ERROR names the header and the value")
    got = crecorder.quiet_for(1.0)
    check(not got, f"a refused SEND was delivered: {[m.headers for m in got]}")
    disconnect(consumer, crecorder)


def main():
    args = parse_args(__doc__)
    delayed(args.hosts)
    periodic(args.hosts)
    management(args.hosts)
    bad_headers(args.hosts)


if __name__ == "__main__":
    run(main)
