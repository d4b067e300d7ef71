#!/usr/bin/env python3
"""Runs STOMP client libraries' own test suites against a live broker, one result per test.

Two suites written by other people for ActiveMQ Classic, both shipped in their sdists on PyPI:

  stomppy   stomp.py 4.1.24, the last stomp.py release whose sdist ships its tests
            (stomp/test/*.py, configured by stomp/test/setup.ini)
  stompest  stompest 2.3.0's sync_client_integration_test (stompest/tests/, configured by
            stompest/tests/__init__.py)

tests/clients/activemq-baseline.sh runs them against ActiveMQ 5.17.2 and writes a baseline file
per suite; tests/tests/client_suites.rs runs them against brokerd and asserts that every test
that passed against ActiveMQ passes.

    client_suite.py fetch SUITE CACHE
        Downloads the suite's sdist with pip into CACHE unless it is there, unpacks it, and
        prints the unpacked directory.
    client_suite.py run SUITE SRC --host H --port P --ipv6-port P6 --spare-ports A,B
                    --out RESULTS.json [--only BASELINE] [--timeout SECONDS] [--jobs N]
        Runs the suite's tests from the unpacked source SRC against the broker at H:P (and
        [::1]:P6 for stomp.py's IPv6 test), each in its own process with a time limit, and
        writes every test's outcome (pass, fail, error, skip, timeout) to RESULTS.json. The
        spare ports are ports nobody listens on, in place of the suites' fixed ones (stomp.py's
        fake server listens on the first; stompest expects both to refuse connections). With
        --only, runs just the tests BASELINE lists as passing against ActiveMQ.
    client_suite.py baseline SUITE --activemq VERSION RESULTS.json...
        Prints a baseline file from the results of runs against ActiveMQ: a test passes if it
        passed in every run.

Nothing is written into SRC: each run copies the package to a temporary directory and
configures it there. Only host names, ports and credentials change in the suites' files.
"""

import argparse
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

RESULT_MARK = "CLIENT-SUITE-RESULT "

# The user both brokers let in (only that one): the stomp.py suite's own setup.ini logs in as
# admin/password, and its TestConnectionErrors logs in as someone else and expects to be
# refused (without authentication it passes or fails by a race).
USER, PASSWORD = "admin", "password"


class Suite:
    """One client library's test suite: where it comes from, what we run, how to configure it."""

    def __init__(self, name, project, version, package, tests_package, broker_modules,
                 client_modules, not_run, races, shared_groups, first_groups):
        self.name = name
        self.project = project
        self.version = version
        self.package = package
        self.tests_package = tests_package
        # Modules that talk to the broker under test.
        self.broker_modules = broker_modules
        # Modules that never contact a broker (client unit tests, tests against the suite's own
        # fake server): run too, so the counts cover the suite; their outcome does not depend
        # on the broker.
        self.client_modules = client_modules
        # What is not run, and why: modules, classes or single tests.
        self.not_run = not_run
        # Tests whose outcome is a race between the client's own threads, whatever the broker:
        # never compared, even when they happened to pass in every baseline run.
        self.races = races
        # Modules that must not run side by side (same destinations, same fixed port): module
        # -> group name. Other modules are a group each.
        self.shared_groups = shared_groups
        # Groups to start first under --jobs, the longest.
        self.first_groups = first_groups

    @property
    def unpacked(self):
        return "%s-%s" % (self.project, self.version)

    def test_dir(self, root):
        return os.path.join(root, *self.tests_package.split("."))


STOMPPY = Suite(
    name="stomppy",
    project="stomp.py",
    version="4.1.24",
    package="stomp",
    tests_package="stomp.test",
    broker_modules=[
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
    ],
    client_modules=["utils_test", "transport_test", "p3_backward_test", "ss_test"],
    not_run={
        "ssl_test": "needs a stomp+ssl listener with the suite's keystore (broker.ks); brokerd "
        "has no TLS listener",
        "ssl_sni_test": "needs TLS and an SNI proxy (haproxy) in front of two TLS brokers",
        "cli_ssl_test": "the command-line client over TLS: needs a TLS listener",
        "rabbitmq_test": "written for RabbitMQ, a second server beside ActiveMQ; against the "
        "same broker it shares /queue/test with s11_test and activemq_test and sees their "
        "messages",
        "stompserver_test": "written for stompserver (Ruby), a third server; shares /queue/test "
        "the same way",
        "apollo_test": "written for Apollo, which the suite's setup.ini does not even "
        "configure; shares /queue/test the same way",
        "misc_test.TestMessageTransform.test_transform": "written for RabbitMQ, which passes the "
        "`transformation: jms-map-xml` header through; ActiveMQ acts on it and needs XStream, "
        "which Debian's package lacks",
        "multicast_test": "stomp.py's multicast adapter: no broker, sends UDP to a multicast "
        "group (traffic off the loopback interface)",
        "p2_backward_test": "Python 2 only",
        "basic_test.TestBasicSend.test_timeout": "connects to 192.0.2.0:60000 to time out: "
        "traffic to an address off this machine, and no broker involved",
    },
    races={
        "override_threading_test.TestThreadingOverride.test_basic": "its listener reconnects "
        "from the receiver thread when the receive loop ends, while the test reconnects from "
        "the main thread; when the old receiver's cleanup sets current_host_and_port to None "
        "inside the main thread's connect(), TestListener.on_connecting raises TypeError. The "
        "faster the broker answers DISCONNECT, the likelier: failed 12 of 30 runs alone "
        "against ActiveMQ 5.17.2, 24 of 30 against brokerd",
        "cli_test.TestCLI.teststats": "it registers its expectation of the MESSAGE line only "
        "after the send; when the client's receiver thread prints MESSAGE first, TestStdout "
        "fails in that thread, which ends the receive loop, and the next UNSUBSCRIBE raises "
        "NotConnectedException. Failed in 1 of 3 baseline runs against ActiveMQ 5.17.2 beside "
        "other tests (--jobs 3); passed 20 of 20 runs alone against either broker",
    },
    shared_groups={
        # '/queue/test1-<second>' (the suite names queues after the current second)
        "basic_test": "a",
        "override_threading_test": "a",
        # '/queue/test', and the fake server's port (s11_test, s12_test, misc_test, ss_test)
        "s11_test": "b",
        "activemq_test": "b",
        "ss_test": "b",
        "misc_test": "b",
        "s12_test": "b",
    },
    # cli_test sleeps for about 50 s, threading_test runs for 20 s.
    first_groups=["cli_test", "threading_test"],
)

STOMPEST = Suite(
    name="stompest",
    project="stompest",
    version="2.3.0",
    package="stompest",
    tests_package="stompest.tests",
    broker_modules=["sync_client_integration_test"],
    client_modules=[],
    not_run=dict(
        [("sync_client_integration_test.SimpleStompIntegrationTestSSL",
          "the same tests over TLS: needs a TLS listener")]
        + [(module, "unit tests of the client, with mocks: no broker involved")
           for module in ("commands_test", "failover_test", "frame_test", "parser_test",
                          "session_test", "sync_client_test", "transport_test", "util_test")]
    ),
    races={},
    # Every test uses /queue/stompUnitTest.
    shared_groups={"sync_client_integration_test": "a"},
    first_groups=[],
)

SUITES = {s.name: s for s in (STOMPPY, STOMPEST)}


def fetch(suite, cache):
    """Downloads (when missing) and unpacks the sdist under `cache`; returns the source dir."""
    os.makedirs(cache, exist_ok=True)
    src = os.path.join(cache, suite.unpacked)
    if os.path.isdir(suite.test_dir(src)):
        return src
    archive = os.path.join(cache, suite.unpacked + ".tar.gz")
    if not os.path.isfile(archive):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", "--dest", cache,
             "%s==%s" % (suite.project, suite.version)],
            check=True,
        )
    tmp = tempfile.mkdtemp(dir=cache)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp)
    # Another run may have unpacked it meanwhile; either copy is the same.
    try:
        os.rename(os.path.join(tmp, suite.unpacked), src)
    except OSError:
        pass
    shutil.rmtree(tmp, ignore_errors=True)
    return src


def full_id(suite, name):
    return "%s.%s" % (suite.tests_package, name)


def list_tests(suite, src, modules):
    """Test ids (package.module.Class.method) of `modules`, in file order, found without
    importing them (stomp.py's threading_test connects to the broker on import). Only classes
    deriving from unittest.TestCase directly: stompest's TLS variant derives from its plain
    class and is listed in not_run."""
    ids = []
    for module in modules:
        path = os.path.join(suite.test_dir(src), module + ".py")
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            if not any(ast.unparse(b).endswith("TestCase") for b in node.bases):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    test_id = full_id(suite, "%s.%s.%s" % (module, node.name, item.name))
                    # stomp.py's nonascii_test defines test_image_send twice: the second counts.
                    if test_id not in ids:
                        ids.append(test_id)
    return ids


def selected_tests(suite, src):
    """Every test of the modules we run, less the single tests we do not run."""
    skip = {full_id(suite, name) for name in suite.not_run}
    return [t for t in list_tests(suite, src, suite.broker_modules + suite.client_modules)
            if t not in skip]


def replace_exactly(path, old, new, count=1):
    """Replaces `old` with `new` in the file, insisting on `count` occurrences, so a suite that
    is not the one we know fails loudly rather than running half-configured."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = text.count(old)
    if found != count:
        raise SystemExit("%s: expected %d of %r, found %d" % (path, count, old, found))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(old, new))


def configure_stomppy(test_dir, host, port, ipv6_port, spare_ports):
    # The sections the suite reads, all pointing at the broker under test. The ssl_port is
    # read by modules we do not run.
    with open(os.path.join(test_dir, "setup.ini"), "w") as f:
        f.write(
            "[default]\nhost = {h}\nport = {p}\nssl_port = {p}\nuser = {u}\npassword = {pw}\n\n"
            "[ipv6]\nhost = ::1\nport = {p6}\n".format(
                h=host, p=port, p6=ipv6_port, u=USER, pw=PASSWORD)
        )
    # The suite's fake server (TestStompServer) listens on a fixed port, 60000.
    fake = "'127.0.0.1', %d)" % spare_ports[0]
    for module, count in (("ss_test", 3), ("s11_test", 4), ("s12_test", 2), ("misc_test", 2)):
        replace_exactly(os.path.join(test_dir, module + ".py"), "'127.0.0.1', 60000)", fake,
                        count)


def configure_stompest(test_dir, host, port, ipv6_port, spare_ports):
    init = os.path.join(test_dir, "__init__.py")
    replace_exactly(init, "HOST = 'localhost'", "HOST = '%s'" % host)
    replace_exactly(init, "PORT = 61613", "PORT = %d" % port)
    # Its ActiveMQ logs in with an empty login; ours let in only the one user.
    replace_exactly(init, "'activemq': ('', '', '')", "'activemq': (%r, %r, '')" % (USER, PASSWORD))
    # test_3_timeout's failover URLs: 61613 is the broker, 61610 and 61611 refuse connections.
    test = os.path.join(test_dir, "sync_client_integration_test.py")
    replace_exactly(test, "tcp://localhost:61613", "tcp://%s:%d" % (host, port), 2)
    replace_exactly(test, "tcp://localhost:61610", "tcp://127.0.0.1:%d" % spare_ports[0], 3)
    replace_exactly(test, "tcp://localhost:61611", "tcp://127.0.0.1:%d" % spare_ports[1], 1)


CONFIGURE = {"stomppy": configure_stomppy, "stompest": configure_stompest}


def prepare(suite, src, host, port, ipv6_port, spare_ports):
    """Copies the package to a temporary work directory configured for the broker under test."""
    work = tempfile.mkdtemp(prefix="client-suite-%s-" % suite.name)
    shutil.copytree(os.path.join(src, suite.package), os.path.join(work, suite.package))
    CONFIGURE[suite.name](suite.test_dir(work), host, port, ipv6_port, spare_ports)
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
    import importlib
    import threading
    import unittest

    sys.path.insert(0, work)
    if os.environ.get("CLIENT_SUITE_LOG"):
        # Every frame sent and received (the clients log them at DEBUG), for comparing brokers
        # and for a failure's message.
        import logging

        logging.basicConfig(stream=sys.stdout, level=logging.DEBUG,
                            format="%(relativeCreated)6d %(threadName)s %(message)s")
    # stomp.py 4.1.24 was written for Python 3.6-3.8: threading_test's tearDown reads
    # Thread.isAlive, which Python 3.9 removed.
    if not hasattr(threading.Thread, "isAlive"):
        threading.Thread.isAlive = threading.Thread.is_alive
    package = importlib.import_module(test_id.split(".")[0])
    if not os.path.abspath(package.__file__).startswith(os.path.abspath(work)):
        raise SystemExit("imported %s, not the copy in %s" % (package.__file__, work))

    outcome, detail = "pass", ""
    try:
        suite = unittest.defaultTestLoader.loadTestsFromName(test_id)
        runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2)
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


def groups(suite, tests):
    """The tests in groups that --jobs runs side by side, each group in order."""
    by_group = {}
    for t in tests:
        module = t[len(suite.tests_package) + 1:].split(".")[0]
        by_group.setdefault(suite.shared_groups.get(module, module), []).append((module, t))
    ordered = sorted(by_group.values(),
                     key=lambda g: suite.first_groups.index(g[0][0])
                     if g[0][0] in suite.first_groups else len(suite.first_groups))
    return [[t for _, t in g] for g in ordered]


def run(suite, args):
    if suite.name == "stomppy":
        try:
            import docopt  # noqa: F401  (stomp.py's command-line client, which cli_test drives)
        except ImportError:
            raise SystemExit("cli_test needs docopt: python3 -m pip install docopt-ng")
    tests = selected_tests(suite, args.src)
    if args.only:
        wanted = [t for outcome, t, _ in read_baseline(args.only) if outcome == "pass"]
        unknown = [t for t in wanted if t not in tests]
        if unknown:
            raise SystemExit("the baseline names tests this suite does not run: %s" % unknown)
        tests = [t for t in tests if t in wanted]
    spare = [int(p) for p in args.spare_ports.split(",")]
    if len(spare) < 2:
        raise SystemExit("--spare-ports needs two ports")
    work = prepare(suite, args.src, args.host, args.port, args.ipv6_port, spare)
    results = {}
    started = time.monotonic()
    try:
        def run_group(group):
            for t in group:
                r = run_one_in_child(work, t, args.timeout)
                results[t] = r
                print("%-7s %s (%.1f s)" % (r["outcome"], t, r["seconds"]), flush=True)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for f in [pool.submit(run_group, g) for g in groups(suite, tests)]:
                f.result()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ordered = {t: results[t] for t in tests}
    with open(args.out, "w") as f:
        json.dump({"suite": "%s %s" % (suite.project, suite.version),
                   "broker": "%s:%s" % (args.host, args.port), "tests": ordered}, f, indent=1)
    counts = {}
    for r in ordered.values():
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    print("%s %s suite: %d tests in %.0f s: %s" % (
        suite.project, suite.version, len(ordered), time.monotonic() - started,
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


def baseline(suite, args):
    runs = []
    for path in args.results:
        with open(path) as f:
            runs.append(json.load(f)["tests"])
    tests = list(runs[0])
    races = {full_id(suite, name): reason for name, reason in suite.races.items()}
    out = sys.stdout
    out.write(
        "# %s %s's own tests against ActiveMQ Classic %s, %d fresh runs, written by\n"
        "# tests/clients/activemq-baseline.sh. tests/tests/client_suites.rs asserts that every\n"
        "# test marked `pass` (passed in every run) passes against brokerd too.\n"
        "#\n"
        "# OUTCOME TEST  # why it is not compared\n"
        % (suite.project, suite.version, args.activemq, len(runs))
    )
    for t in tests:
        if t not in races and all(run[t]["outcome"] == "pass" for run in runs):
            out.write("pass %s\n" % t)
    out.write("\n# Not passing in every run against ActiveMQ, or racy: not compared.\n")
    for t in tests:
        passed = [run[t]["outcome"] for run in runs].count("pass")
        if t in races:
            out.write("race %s  # passed in %d of %d runs; a race inside the client: %s\n" % (
                t, passed, len(runs), races[t]))
            continue
        if passed == len(runs):
            continue
        failed = next(run[t] for run in runs if run[t]["outcome"] != "pass")
        reason = (failed["detail"].strip().splitlines() or ["?"])[-1]
        outcome = "flaky" if passed else failed["outcome"]
        out.write("%s %s  # passed in %d of %d runs: %s\n" % (
            outcome, t, passed, len(runs), reason))
    out.write("\n# Not run (not_run in tests/clients/client_suite.py).\n")
    for name, reason in suite.not_run.items():
        out.write("not-run %s  # %s\n" % (full_id(suite, name), reason))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch")
    p.add_argument("suite", choices=SUITES)
    p.add_argument("cache")
    p = sub.add_parser("run")
    p.add_argument("suite", choices=SUITES)
    p.add_argument("src")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ipv6-port", type=int, required=True)
    p.add_argument("--spare-ports", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--only")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--jobs", type=int, default=1)
    p = sub.add_parser("one")
    p.add_argument("work")
    p.add_argument("test_id")
    p = sub.add_parser("baseline")
    p.add_argument("suite", choices=SUITES)
    p.add_argument("--activemq", required=True, help="ActiveMQ's version, for the header")
    p.add_argument("results", nargs="+", help="results of one or more runs")
    args = parser.parse_args()
    if args.command == "fetch":
        print(fetch(SUITES[args.suite], args.cache))
    elif args.command == "run":
        run(SUITES[args.suite], args)
    elif args.command == "one":
        run_one_here(args.work, args.test_id)
    else:
        baseline(SUITES[args.suite], args)


if __name__ == "__main__":
    main()
