#!/usr/bin/env bash
# Regenerates tests/clients/stomppy-4.1.24-activemq-baseline.txt: runs stomp.py 4.1.24's own
# test suite against ActiveMQ Classic 5.17.2 from Debian's `activemq` package, a fresh broker
# for each of RUNS runs (default 3), started here on 127.0.0.1 and [::1] on a port the kernel
# picked, in a temporary directory, and writes which tests passed in every run.
# tests/tests/client_suites.rs then asserts that each of them passes against brokerd. CI does
# not run this (no ActiveMQ there); run it by hand after changing the suite runner, and commit
# the baseline it writes.
#
#   tests/clients/activemq-baseline.sh [--keep DIR]  # DIR keeps each run's results (JSON,
#                                                    # with every test's output)
#   tests/clients/activemq-baseline.sh --serve       # only start ActiveMQ and wait, to run
#                                                    # tests by hand with stomppy_suite.py run
#
# Environment: RUNS (3), JOBS (3), STOMPPY_SUITE_LOG (1: log every frame into the results);
# the defaults are how client_suites.rs runs the suite against brokerd. Needs Debian's activemq package (installed with apt-get when
# missing, as root), Java, python3 with pip (the sdist comes from PyPI) and docopt (stomp.py's
# command-line client imports it; stomp.py 8 and later pull it in).
set -euo pipefail
cd "$(dirname "$0")/../.."

keep=""
serve=""
case ${1:-} in
    --keep) keep=$2 ;;
    --serve) serve=1 ;;
    "") ;;
    *) echo "usage: $0 [--keep DIR | --serve]" >&2; exit 2 ;;
esac
runs=${RUNS:-3}
jobs=${JOBS:-3}
export STOMPPY_SUITE_LOG=${STOMPPY_SUITE_LOG-1}

if ! dpkg -s activemq >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || { echo "install ActiveMQ first: apt-get install -y activemq" >&2; exit 1; }
    apt-get install -y activemq >/dev/null
fi
version=$(dpkg-query -W -f '${Version}' activemq)
echo "== ActiveMQ $version"

cache=${STOMPPY_CACHE:-${CARGO_TARGET_DIR:-$PWD/target}/stomppy-suite}
src=$(python3 tests/clients/stomppy_suite.py fetch "$cache")

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

# Starts a fresh ActiveMQ in directory $1; sets java_pid and port.
start_activemq() {
    local dir=$1
    # A port that was free a moment ago on both 127.0.0.1 and ::1.
    port=$(python3 -c 'import socket
for _ in range(100):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket(socket.AF_INET6)
    try:
        b.bind(("::1", p)); print(p); break
    except OSError:
        pass
    finally:
        a.close(); b.close()')
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
results=()
for run in $(seq "$runs"); do
    start_activemq "$work/run$run"
    echo "== run $run of $runs"
    python3 tests/clients/stomppy_suite.py run "$src" --host 127.0.0.1 --port "$port" \
        --ipv6-port "$port" --jobs "$jobs" --out "$results_dir/run$run.json"
    results+=("$results_dir/run$run.json")
    stop_activemq
done
python3 tests/clients/stomppy_suite.py baseline --activemq "$version" "${results[@]}" \
    >tests/clients/stomppy-4.1.24-activemq-baseline.txt
echo "== wrote tests/clients/stomppy-4.1.24-activemq-baseline.txt"
