"""stomp.py scenario: a users file with argon2id passwords and authorisation entries.

alice (group apps) may write and read /queue/orders.>; bob (group readers) may only read them.
alice's SEND to /queue/payments and bob's SEND to /queue/orders.eu each get an ERROR naming
the user, the operation and the destination; a wrong passcode is refused at CONNECT; and what
was refused is never delivered: bob, reading the orders, gets alice's order alone.
"""

import stomp

from scenario import check, connect, disconnect, log, parse_args, run, send, subscribe


def denied(hosts, login, passcode, destination):
    """SENDs as `login` to `destination` and returns the ERROR's message."""
    conn, recorder = connect(hosts, login, headers={"login": login, "passcode": passcode})
    conn.send(destination, "refused", headers={"receipt": "r"})
    recorder.wait_until("an ERROR", lambda: recorder.errors)
    message = recorder.errors[0].headers.get("message")
    log(f"{login} -> {destination}: ERROR {message!r}")
    check("r" not in recorder.receipts, f"{login}: the refused SEND got a RECEIPT")
    return message


def main():
    hosts = parse_args(__doc__).hosts
    alice, arec = connect(hosts, "alice", headers={"login": "alice", "passcode": "alice-pw"})
    send(alice, arec, "/queue/orders.eu", "order-1", "sent-1")
    disconnect(alice, arec)

    message = denied(hosts, "alice", "alice-pw", "/queue/payments")
    check(message == 'user "alice" is not authorised to write /queue/payments',
          f"alice's refusal said {message!r}")
    message = denied(hosts, "bob", "bob-pw", "/queue/orders.eu")
    check(message == 'user "bob" is not authorised to write /queue/orders.eu',
          f"bob's refusal said {message!r}")

    try:
        connect(hosts, "mallory", headers={"login": "bob", "passcode": "guess"})
        check(False, "a wrong passcode connected")
    except stomp.exception.ConnectFailedException as e:
        log(f"a wrong passcode is refused: {e}")

    bob, brec = connect(hosts, "bob", headers={"login": "bob", "passcode": "bob-pw"})
    subscribe(bob, brec, "/queue/orders.>", "orders")
    got = brec.wait_for_messages(1)
    got = brec.quiet_for(1.0)
    check([m.body for m in got] == ["order-1"], f"bob read {[m.body for m in got]}")
    disconnect(bob, brec)


if __name__ == "__main__":
    run(main)
