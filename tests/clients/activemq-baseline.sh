#!/usr/bin/env bash
# Regenerates the ActiveMQ baselines of the client test suites (tests/clients/client_suite.py):
# tests/clients/stomppy-4.1.24-activemq-baseline.txt and stompest-2.3.0-activemq-baseline.txt.
# Runs each suite against ActiveMQ Classic 5.17.2 from Debian's `activemq` package, a fresh
# broker for each of RUNS runs (default 3), started here on 127.0.0.1 and [::1] on a port the
# kernel picked, in a temporary directory, and writes which tests passed in every run.
# tests/tests/client_suites.rs then asserts that each of them passes against brokerd. CI does
# not run this (no ActiveMQ there); run it by hand after changing the suite runner, and commit
# the baselines it writes.
#
#   tests/clients/activemq-baseline.sh [--keep DIR] [SUITE...]  # DIR keeps each run's results
#                                              # (JSON, with every test's output); default:
#                                              # both suites, stomppy and stompest
#   tests/clients/activemq-baseline.sh --serve  # only start ActiveMQ and wait, to run tests
#                                              # by hand with client_suite.py run
#
# Environment: RUNS (3), JOBS (3), CLIENT_SUITE_LOG (1: log every frame into the results);
# the defaults are how client_suites.rs runs the suites against brokerd. Needs Debian's
# activemq package (installed with apt-get when missing, as root), Java, python3 with pip (the
# sdists come from PyPI) and docopt (stomp.py's command-line client imports it; stomp.py 8 and
# later pull it in).
set -euo pipefail
cd "$(dirname "$0")/../.."

keep=""
serve=""
case ${1:-} in
    --keep) keep=$2; shift 2 ;;
    --serve) serve=1; shift ;;
    -*) echo "usage: $0 [--keep DIR] [SUITE...] | --serve" >&2; exit 2 ;;
esac
suites=("$@")
[[ ${#suites[@]} -gt 0 ]] || suites=(stomppy stompest)
runs=${RUNS:-3}
jobs=${JOBS:-3}
export CLIENT_SUITE_LOG=${CLIENT_SUITE_LOG-1}
# No __pycache__ in the source tree.
export PYTHONDONTWRITEBYTECODE=1

if ! dpkg -s activemq >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || { echo "install ActiveMQ first: apt-get install -y activemq" >&2; exit 1; }
    apt-get install -y activemq >/dev/null
fi
version=$(dpkg-query -W -f '${Version}' activemq)
echo "== ActiveMQ $version"

cache=${CLIENT_SUITE_CACHE:-${CARGO_TARGET_DIR:-$PWD/target}/client-suites}

work=$(mktemp -d /tmp/activemq-baseline.XXXXXX)
java_pid=""
stop_activemq() {
    if [[ -n $java_pid ]]; then
        kill "$java_pid" 2>/dev/null || true
        wait "$java_pid" 2>/dev/null || true
        java_pid=""
    fi
}
trap 'stop_activemq; rm -rf "$work"' EXIT
# So that the EXIT trap runs (and stops ActiveMQ) on Ctrl-C and kill too.
trap 'exit 130' INT
trap 'exit 143' TERM

# Ports that were free a moment ago on both 127.0.0.1 and ::1, $1 of them.
free_ports() {
    python3 -c 'import socket, sys
ports = []
while len(ports) < int(sys.argv[1]):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket(socket.AF_INET6)
    try:
        b.bind(("::1", p))
        if p not in ports:
            ports.append(p)
    except OSError:
        pass
    finally:
        a.close(); b.close()
print(" ".join(map(str, ports)))' "$1"
}

# Starts a fresh ActiveMQ in directory $1; sets java_pid and port.
start_activemq() {
    local dir=$1
    port=$(free_ports 1)
    mkdir -p "$dir/conf" "$dir/data" "$dir/tmp"
    # As the suite's authors ran it (their Docker image: Debian's activemq, its `main` instance
    # with a plain stomp:// connector), on loopback only, plus the suite's user (admin,
    # password) as the only one let in: basic_test's TestConnectionErrors log in as someone
    # else and expect to be refused (client_suites.rs gives brokerd the same users file).
    cat >"$dir/conf/activemq.xml" <<EOF
<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="main"
          dataDirectory="$dir/data">
    <plugins>
      <simpleAuthenticationPlugin anonymousAccessAllowed="false">
        <users><authenticationUser username="admin" password="password" groups="users"/></users>
      </simpleAuthenticationPlugin>
    </plugins>
    <persistenceAdapter><kahaDB directory="$dir/data/kahadb"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:$port"/>
      <transportConnector name="stomp-ipv6" uri="stomp://[::1]:$port"/>
    </transportConnectors>
  </broker>
</beans>
EOF
    cat >"$dir/conf/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$dir/data/activemq.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
EOF
    # What /usr/bin/activemq runs, without its Debian defaults (which pin the base to
    # /var/lib/activemq/INSTANCE).
    java -Xmx512M \
        --add-reads=java.xml=java.logging \
        --add-opens java.base/java.security=ALL-UNNAMED --add-opens java.base/java.net=ALL-UNNAMED \
        --add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.util=ALL-UNNAMED \
        --add-opens java.naming/javax.naming.spi=ALL-UNNAMED \
        --add-opens java.base/java.util.concurrent=ALL-UNNAMED \
        --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED \
        -Dactivemq.classpath="$dir/conf" -Dactivemq.home=/usr/share/activemq \
        -Dactivemq.base="$dir" -Dactivemq.conf="$dir/conf" -Dactivemq.data="$dir/data" \
        -Djava.io.tmpdir="$dir/tmp" -Dlog4j.configuration="file:$dir/conf/log4j.properties" \
        -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$dir/conf/activemq.xml" \
        >"$dir/console.log" 2>&1 &
    java_pid=$!
    echo "== waiting for ActiveMQ's STOMP connector on 127.0.0.1:$port"
    for _ in $(seq 120); do
        if python3 -c "import socket,sys
s = socket.create_connection(('127.0.0.1', $port), timeout=2)
s.sendall(b'CONNECT\naccept-version:1.2\nhost:localhost\nlogin:admin\npasscode:password\n\n\0')
sys.exit(0 if s.recv(9) == b'CONNECTED' else 1)" 2>/dev/null; then
            return
        fi
        kill -0 "$java_pid" 2>/dev/null || { cat "$dir/console.log"; exit 1; }
        sleep 0.5
    done
    echo "ActiveMQ did not answer within 60 s; its console:" >&2
    cat "$dir/console.log" >&2
    exit 1
}

if [[ -n $serve ]]; then
    start_activemq "$work/serve"
    echo "ActiveMQ serves STOMP on 127.0.0.1:$port and [::1]:$port (log: $work/serve/data/activemq.log); Ctrl-C stops it"
    wait "$java_pid"
    exit
fi

results_dir=${keep:-$work/results}
mkdir -p "$results_dir"
for suite in "${suites[@]}"; do
    src=$(python3 tests/clients/client_suite.py fetch "$suite" "$cache")
    results=()
    for run in $(seq "$runs"); do
        start_activemq "$work/$suite-run$run"
        echo "== $suite: run $run of $runs"
        read -r spare1 spare2 < <(free_ports 2)
        python3 tests/clients/client_suite.py run "$suite" "$src" --host 127.0.0.1 \
            --port "$port" --ipv6-port "$port" --spare-ports "$spare1,$spare2" --jobs "$jobs" \
            --out "$results_dir/$suite-run$run.json"
        results+=("$results_dir/$suite-run$run.json")
        stop_activemq
    done
    name=$(python3 -c 'import sys; sys.path.insert(0, "tests/clients"); import client_suite as c
s = c.SUITES[sys.argv[1]]; print("%s-%s" % (s.name, s.version))' "$suite")
    python3 tests/clients/client_suite.py baseline "$suite" --activemq "$version" "${results[@]}" \
        >"tests/clients/$name-activemq-baseline.txt"
    echo "== wrote tests/clients/$name-activemq-baseline.txt"
done
