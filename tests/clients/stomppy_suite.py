#!/usr/bin/env python3
"""Runs stomp.py 4.1.24's own test suite against a live STOMP broker, one result per test.

stomp.py 4.1.24 is the last release whose sdist ships its tests (stomp/test/*.py, configured
by stomp/test/setup.ini). Its authors ran them against ActiveMQ Classic from Debian; we run
them against ActiveMQ 5.17.2 (tests/clients/activemq-baseline.sh, which writes the baseline
file) and against brokerd (tests/tests/client_suites.rs, which asserts that every test that
passes on ActiveMQ passes on brokerd).

    stomppy_suite.py fetch CACHE
        Downloads the sdist with pip into CACHE unless it is there, unpacks it, and prints the
        unpacked directory.
    stomppy_suite.py run SRC --host H --port P --ipv6-port P6 --out RESULTS.json
                     [--only BASELINE] [--timeout SECONDS] [--jobs N] [--fake-server-port P]
        Runs the selected tests of the unpacked source SRC against the broker at H:P (and
        [::1]:P6 for the IPv6 test), each in its own process with a time limit, and writes
        every test's outcome (pass, fail, error, skip, timeout) to RESULTS.json. With --only,
        runs just the tests the baseline file lists as passing on ActiveMQ.
    stomppy_suite.py baseline --activemq VERSION RESULTS.json...
        Prints a baseline file from the results of runs against ActiveMQ: a test passes if it
        passed in every run.

Nothing here is written into SRC: each run copies it to a temporary directory first, writes
setup.ini there, and moves the suite's fake server off its fixed port 60000.
"""

import argparse
import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

VERSION = "4.1.24"
SDIST = "stomp.py-%s.tar.gz" % VERSION

# The suite's modules that talk to a generic STOMP broker: run against the broker under test.
# rabbitmq_test, stompserver_test and apollo_test are named after the broker their authors
# pointed them at, but use nothing specific to it (plain send/subscribe/receipt), so their
# config sections point at the broker under test too; so does misc_test's message transform
# test, which reads the [rabbitmq] section.
BROKER_MODULES = [
    "basic_test",
    "s10_test",
    "s11_test",
    "s12_test",
    "activemq_test",
    "nonascii_test",
    "threading_test",
    "override_threading_test",
    "cli_test",
    "misc_test",
    "local_test",
]

# Modules that never contact a broker: unit tests of the client, and tests against the suite's
# own fake server (TestStompServer). Run too, so the counts cover the whole suite; their
# outcome does not depend on the broker.
CLIENT_MODULES = ["utils_test", "transport_test", "p3_backward_test", "ss_test"]

# What is not run, and why. Keys are modules or single tests.
NOT_RUN = {
    "ssl_test": "needs a stomp+ssl listener with the suite's keystore (broker.ks); brokerd "
    "has no TLS listener",
    "ssl_sni_test": "needs TLS and an SNI proxy (haproxy) in front of two TLS brokers",
    "cli_ssl_test": "the command-line client over TLS: needs a TLS listener",
    "rabbitmq_test": "written for RabbitMQ, a second server beside ActiveMQ; against the same "
    "broker it shares /queue/test with s11_test and activemq_test and sees their messages",
    "stompserver_test": "written for stompserver (Ruby), a third server; shares /queue/test "
    "the same way",
    "apollo_test": "written for Apollo, which the suite's setup.ini does not even configure; "
    "shares /queue/test the same way",
    "stomp.test.misc_test.TestMessageTransform.test_transform": "written for RabbitMQ, which "
    "passes the `transformation: jms-map-xml` header through; ActiveMQ acts on it and needs "
    "XStream, which Debian's package lacks",
    "multicast_test": "stomp.py's multicast adapter: no broker, sends UDP to a multicast group "
    "(traffic off the loopback interface)",
    "p2_backward_test": "Python 2 only",
    "stomp.test.basic_test.TestBasicSend.test_timeout": "connects to 192.0.2.0:60000 to "
    "time out: traffic to an address off this machine, and no broker involved",
}

# Why tests that do not pass against ActiveMQ 5.17.2 in every run fail; the baseline records
# them as not compared, with this reason.
ACTIVEMQ_FAILURES = {}

# Tests whose outcome is a race between the client's own threads, whatever the broker: never
# compared, even when they happened to pass in every baseline run. Measured on this machine
# with 30 runs of the test alone against each broker.
RACES = {
    "stomp.test.override_threading_test.TestThreadingOverride.test_basic": "its listener "
    "reconnects from the receiver thread when the receive loop ends, while the test reconnects "
    "from the main thread; when the old receiver's cleanup sets current_host_and_port to None "
    "inside the main thread's connect(), TestListener.on_connecting raises TypeError. The "
    "faster the broker answers DISCONNECT, the likelier: failed 12 of 30 runs against "
    "ActiveMQ 5.17.2, 24 of 30 against brokerd",
    "stomp.test.cli_test.TestCLI.teststats": "it registers its expectation of the MESSAGE "
    "line only after the send; when the client's receiver thread prints MESSAGE first, "
    "TestStdout fails in that thread, which ends the receive loop, and the next UNSUBSCRIBE "
    "raises NotConnectedException. Failed in 1 of 3 baseline runs against ActiveMQ 5.17.2 "
    "beside other tests (--jobs 3); passed 20 of 20 runs alone against either broker",
}

RESULT_MARK = "STOMPPY-SUITE-RESULT "


def fetch(cache):
    """Downloads (when missing) and unpacks the sdist under `cache`; returns the source dir."""
    os.makedirs(cache, exist_ok=True)
    src = os.path.join(cache, "stomp.py-%s" % VERSION)
    if os.path.isfile(os.path.join(src, "stomp", "test", "basic_test.py")):
        return src
    archive = os.path.join(cache, SDIST)
    if not os.path.isfile(archive):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", "--dest", cache,
             "stomp.py==%s" % VERSION],
            check=True,
        )
    tmp = tempfile.mkdtemp(dir=cache)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp)
    # Another run may have unpacked it meanwhile; either copy is the same.
    try:
        os.rename(os.path.join(tmp, "stomp.py-%s" % VERSION), src)
    except OSError:
        pass
    shutil.rmtree(tmp, ignore_errors=True)
    return src


def list_tests(src, modules):
    """Test ids (module.Class.method) of `modules`, in file order, found without importing
    them (threading_test connects to the broker on import)."""
    ids = []
    for module in modules:
        path = os.path.join(src, "stomp", "test", module + ".py")
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [ast.unparse(b) for b in node.bases]
            if not any(b.endswith("TestCase") for b in bases):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    test_id = "stomp.test.%s.%s.%s" % (module, node.name, item.name)
                    # nonascii_test defines test_image_send twice: the second one counts.
                    if test_id not in ids:
                        ids.append(test_id)
    return ids


def selected_tests(src):
    """Every test of the modules we run, less the single tests we do not run."""
    return [t for t in list_tests(src, BROKER_MODULES + CLIENT_MODULES) if t not in NOT_RUN]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(src, host, port, ipv6_port, fake_port):
    """Copies the source to a temporary work directory configured for the broker under test."""
    work = tempfile.mkdtemp(prefix="stomppy-suite-")
    shutil.copytree(os.path.join(src, "stomp"), os.path.join(work, "stomp"))
    test_dir = os.path.join(work, "stomp", "test")
    # The sections the suite reads; user and password as in the suite's own setup.ini. The
    # broker under test must let in that user only: TestConnectionErrors logs in as another
    # and expects to be refused (without authentication it passes or fails by a race).
    with open(os.path.join(test_dir, "setup.ini"), "w") as f:
        f.write(
            "[default]\nhost = {h}\nport = {p}\nssl_port = {p}\nuser = admin\npassword = password\n\n"
            "[ipv6]\nhost = ::1\nport = {p6}\n\n"
            "[rabbitmq]\nhost = {h}\nport = {p}\nuser = guest\npassword = guest\n\n"
            "[stompserver]\nhost = {h}\nport = {p}\n\n"
            "[apollo]\nhost = {h}\nport = {p}\n".format(h=host, p=port, p6=ipv6_port)
        )
    # The fake server (TestStompServer) listens on a fixed port, 60000; move it to one that
    # was free a moment ago. Only the port number changes.
    for name in os.listdir(test_dir):
        if name.endswith(".py"):
            path = os.path.join(test_dir, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
            patched = re.sub(r"'127\.0\.0\.1', 60000\)", "'127.0.0.1', %d)" % fake_port, text)
            if patched != text:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(patched)
    return work


def run_one_in_child(work, test_id, timeout):
    """Runs one test in its own process group; returns its result dict."""
    env = dict(os.environ)
    env["PYTHONPATH"] = work
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-u", os.path.abspath(__file__), "one", work, test_id],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    # A test may leave threads or children behind; its process group goes with it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    seconds = round(time.monotonic() - started, 1)
    text = out.decode("utf-8", "replace")
    result = None
    for line in text.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
    if timed_out:
        result = {"outcome": "timeout", "detail": "still running after %ss" % timeout}
    elif result is None:
        result = {"outcome": "error", "detail": "exited %s without a result" % proc.returncode}
    result["seconds"] = seconds
    # The end of what the test printed, for a failure's message.
    result["output"] = "\n".join(text.splitlines()[-200:])
    return result


def run_one_here(work, test_id):
    """The `one` subcommand: runs one test in this process and prints its result line."""
    import threading
    import unittest

    sys.path.insert(0, work)
    if os.environ.get("STOMPPY_SUITE_LOG"):
        # Every frame sent and received, for comparing brokers and for a failure's message.
        import logging

        logging.basicConfig(stream=sys.stdout, level=logging.DEBUG,
                            format="%(relativeCreated)6d %(threadName)s %(message)s")
    # The suite was written for Python 3.6-3.8: threading_test's tearDown reads
    # Thread.isAlive, which Python 3.9 removed.
    if not hasattr(threading.Thread, "isAlive"):
        threading.Thread.isAlive = threading.Thread.is_alive
    import stomp

    if not os.path.abspath(stomp.__file__).startswith(os.path.abspath(work)):
        raise SystemExit("imported stomp from %s, not from %s" % (stomp.__file__, work))

    class Result(unittest.TextTestResult):
        pass

    outcome, detail = "pass", ""
    try:
        suite = unittest.defaultTestLoader.loadTestsFromName(test_id)
        runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=Result)
        res = runner.run(suite)
        if res.errors:
            outcome, detail = "error", res.errors[0][1]
        elif res.failures:
            outcome, detail = "fail", res.failures[0][1]
        elif res.skipped:
            outcome, detail = "skip", res.skipped[0][1]
        elif res.testsRun != 1:
            outcome, detail = "error", "ran %d tests, not 1" % res.testsRun
    except BaseException as e:  # an import failing, a test calling sys.exit ...
        import traceback

        outcome, detail = "error", "".join(traceback.format_exception(e))
    sys.stdout.write("\n" + RESULT_MARK + json.dumps({"outcome": outcome, "detail": detail}) + "\n")
    sys.stdout.flush()
    # The client's receiver threads and thread pools need not end: leave without joining them.
    os._exit(0)


# Tests that send to the same destination names within one second (the suite names queues
# after the current second) must not run at the same time; --jobs runs these groups, each in
# order, side by side.
def groups(tests):
    shared = {
        # '/queue/test1-<second>'
        "basic_test": "a",
        "override_threading_test": "a",
        # '/queue/test', and the fake server's port (s11_test, s12_test, misc_test, ss_test)
        "s11_test": "b",
        "activemq_test": "b",
        "ss_test": "b",
        "misc_test": "b",
        "s12_test": "b",
    }
    by_group = {}
    for t in tests:
        module = t.split(".")[2]
        by_group.setdefault(shared.get(module, module), []).append(t)
    # The longest groups first: cli_test (about 50 s of sleeps) and threading_test (20 s).
    first = ["cli_test", "threading_test"]
    return sorted(by_group.values(),
                  key=lambda g: first.index(g[0].split(".")[2]) if g[0].split(".")[2] in first
                  else len(first))


def run(args):
    try:
        import docopt  # noqa: F401  (stomp.py's command-line client, which cli_test drives)
    except ImportError:
        raise SystemExit("cli_test needs docopt: python3 -m pip install docopt-ng")
    tests = selected_tests(args.src)
    if args.only:
        wanted = [t for outcome, t, _ in read_baseline(args.only) if outcome == "pass"]
        unknown = [t for t in wanted if t not in tests]
        if unknown:
            raise SystemExit("the baseline names tests this suite does not have: %s" % unknown)
        tests = [t for t in tests if t in wanted]
    fake_port = args.fake_server_port or free_port()
    work = prepare(args.src, args.host, args.port, args.ipv6_port, fake_port)
    results = {}
    started = time.monotonic()
    try:
        def run_group(group):
            for t in group:
                r = run_one_in_child(work, t, args.timeout)
                results[t] = r
                print("%-7s %s (%.1f s)" % (r["outcome"], t, r["seconds"]), flush=True)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for f in [pool.submit(run_group, g) for g in groups(tests)]:
                f.result()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ordered = {t: results[t] for t in tests}
    with open(args.out, "w") as f:
        json.dump({"version": VERSION, "broker": "%s:%s" % (args.host, args.port),
                   "tests": ordered}, f, indent=1)
    counts = {}
    for r in ordered.values():
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print("stomp.py %s suite: %d tests in %.0f s: %s" % (
        VERSION, len(ordered), time.monotonic() - started,
        ", ".join("%d %s" % (n, o) for o, n in sorted(counts.items()))))


def read_baseline(path):
    """(outcome, test id, reason) for each line of a baseline file."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            body, _, reason = line.partition("#")
            words = body.split()
            if len(words) == 2:
                entries.append((words[0], words[1], reason.strip()))
    return entries


def baseline(args):
    runs = []
    for path in args.results:
        with open(path) as f:
            runs.append(json.load(f)["tests"])
    tests = list(runs[0])
    out = sys.stdout
    out.write(
        "# stomp.py %s's own test suite against ActiveMQ Classic %s, %d fresh runs, written by\n"
        "# tests/clients/activemq-baseline.sh. tests/tests/client_suites.rs asserts that every\n"
        "# test marked `pass` (passed in every run) passes against brokerd too.\n"
        "#\n"
        "# OUTCOME TEST  # why it is not compared\n" % (VERSION, args.activemq, len(runs))
    )
    for t in tests:
        if t not in RACES and all(run[t]["outcome"] == "pass" for run in runs):
            out.write("pass %s\n" % t)
    out.write("\n# Not passing in every run against ActiveMQ: not compared.\n")
    for t in tests:
        outcomes = [run[t]["outcome"] for run in runs]
        passed = outcomes.count("pass")
        if t in RACES:
            out.write("race %s  # passed in %d of %d runs; a race inside the client: %s\n" % (
                t, passed, len(runs), RACES[t]))
            continue
        if passed == len(runs):
            continue
        failed = next(run[t] for run in runs if run[t]["outcome"] != "pass")
        reason = ACTIVEMQ_FAILURES.get(t) or (failed["detail"].strip().splitlines() or ["?"])[-1]
        outcome = "flaky" if passed else failed["outcome"]
        out.write("%s %s  # %s in %d of %d runs: %s\n" % (
            outcome, t, "passed" if passed else failed["outcome"], passed or len(runs) - passed,
            len(runs), reason))
    out.write("\n# Not run (NOT_RUN in tests/clients/stomppy_suite.py).\n")
    for name, reason in NOT_RUN.items():
        if "." not in name:
            name = "stomp.test.%s" % name
        out.write("not-run %s  # %s\n" % (name, reason))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch")
    p.add_argument("cache")
    p = sub.add_parser("run")
    p.add_argument("src")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ipv6-port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--only")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--fake-server-port", type=int)
    p = sub.add_parser("one")
    p.add_argument("work")
    p.add_argument("test_id")
    p = sub.add_parser("baseline")
    p.add_argument("--activemq", required=True, help="ActiveMQ's version, for the header")
    p.add_argument("results", nargs="+", help="results of one or more runs")
    args = parser.parse_args()
    if args.command == "fetch":
        print(fetch(args.cache))
    elif args.command == "run":
        run(args)
    elif args.command == "one":
        run_one_here(args.work, args.test_id)
    else:
        baseline(args)


if __name__ == "__main__":
    main()
