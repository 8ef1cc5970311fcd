#!/usr/bin/env bash
# Local single-node Apache Kafka 4.1.1 broker (KRaft combined mode) on 127.0.0.1.
# No Docker, no Apache download site: the jars come from Maven Central via deploy/kafka/pom.xml.
#
# Usage: deploy/kafka/broker.sh {install|start|stop|status|reset|logs}
#
# Settings (environment variables, all optional):
#   FUSION_BROKER_PORT       client port (PLAINTEXT)           default 9092
#   FUSION_CONTROLLER_PORT   KRaft controller port              default 9093
#   FUSION_BROKER_DIR        broker folder (config, data, logs) default <repo>/.broker
#   FUSION_BROKER_HEAP       JVM max heap                       default 768m
#   FUSION_KAFKA_LIBS        jar cache                          default ~/.cache/borderfusion/kafka-4.1.1/libs
#   FUSION_PYTHON            python with kafka-python           default <repo>/.venv/bin/python
#   FUSION_BROKER_START_TIMEOUT  seconds to wait for readiness  default 60
# Several brokers can run side by side with different DIR/PORT/CONTROLLER_PORT values.
set -euo pipefail

KAFKA_VERSION=4.1.1
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

LIBS="${FUSION_KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/borderfusion/kafka-$KAFKA_VERSION/libs}"
BROKER_DIR="${FUSION_BROKER_DIR:-$REPO_ROOT/.broker}"
[[ "$BROKER_DIR" == /* ]] || BROKER_DIR="$PWD/$BROKER_DIR"
BROKER_PORT="${FUSION_BROKER_PORT:-9092}"
CONTROLLER_PORT="${FUSION_CONTROLLER_PORT:-9093}"
HEAP="${FUSION_BROKER_HEAP:-768m}"
PYTHON="${FUSION_PYTHON:-$REPO_ROOT/.venv/bin/python}"
START_TIMEOUT="${FUSION_BROKER_START_TIMEOUT:-60}"

MARKER_JAR="$LIBS/kafka_2.13-$KAFKA_VERSION.jar"
DATA_DIR="$BROKER_DIR/data"
LOG_DIR="$BROKER_DIR/logs"
PROPS="$BROKER_DIR/server.properties"
PID_FILE="$BROKER_DIR/broker.pid"
LOG4J_CONF="$SCRIPT_DIR/log4j2.properties"
SERVER_LOG="$LOG_DIR/server.log"
STDOUT_LOG="$LOG_DIR/kafkaServer.out"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

say() { echo "broker: $*"; }
die() { echo "broker: ERROR: $*" >&2; exit 1; }

usage() {
  cat <<EOF
Usage: $0 {install|start|stop|status|reset|logs}
  install  fetch the Kafka $KAFKA_VERSION jars from Maven Central into $LIBS (once)
  start    start the broker on 127.0.0.1:$BROKER_PORT (folder $BROKER_DIR) and wait until it answers
  stop     stop the broker
  status   print "up" (exit 0) if the broker answers on port $BROKER_PORT, else "down" (exit 1)
  reset    stop the broker and delete its folder (all topics and messages are lost)
  logs     show the broker's server log (follows it when run in a terminal)
EOF
}

# --- helpers ---------------------------------------------------------------

need_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found. Install Java 17+ (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
}

need_python() {
  [[ -x "$PYTHON" ]] || die "no python at $PYTHON (needed for the readiness check). Create the venv first (make venv / make test), or set FUSION_PYTHON."
}

# Prints the pid of *this* broker (the one using $PROPS) if it is alive; fails otherwise.
# The command-line check guards against a stale pid file whose pid was reused.
broker_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid cmdline
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  else
    cmdline="$(ps -ww -o args= -p "$pid" 2>/dev/null || true)"
  fi
  # A zombie (exited, not yet reaped) has an empty command line: treat it as gone.
  [[ "$cmdline" == *kafka.Kafka*"$PROPS"* ]] || return 1
  echo "$pid"
}

# Is anything listening on 127.0.0.1:$1 ?
port_in_use() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# One admin round-trip with kafka-python; $1 = timeout in seconds. Prints the error on stderr.
admin_ping() {
  local secs="${1:-3}"
  timeout $((secs + 5)) "$PYTHON" - "$BROKER_PORT" "$secs" <<'PY'
import logging, sys
logging.disable(logging.CRITICAL)
from kafka.admin import KafkaAdminClient
port, ms = sys.argv[1], int(float(sys.argv[2]) * 1000)
try:
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", client_id="broker.sh-ping",
                             request_timeout_ms=ms, bootstrap_timeout_ms=ms)
    try:
        cluster = admin.describe_cluster()
        if not cluster.get("brokers"):
            raise RuntimeError("cluster has no live brokers yet")
        admin.list_topics()
    finally:
        admin.close()
except Exception as exc:  # any failure means "not ready"
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(1)
PY
}

# Wait until the broker answers; $1 = pid to watch (fail early if it dies).
# Returns 0 when ready, 1 on timeout, 2 if the process exited.
LAST_PING_ERROR=""
wait_ready() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT)) err
  while ((SECONDS < deadline)); do
    # Cheap port probe first: kafka-python keeps retrying a closed port until its timeout.
    if ! port_in_use "$BROKER_PORT"; then
      LAST_PING_ERROR="nothing listening on 127.0.0.1:$BROKER_PORT yet"
    elif err="$(admin_ping 2 2>&1)"; then
      return 0
    else
      LAST_PING_ERROR="$err"
    fi
    broker_pid >/dev/null || return 2
    sleep 0.25
  done
  return 1
}

# Byte size of server.log when this start began, so a failure shows this run's lines only.
LOG_OFFSET=0
show_log_tail() {
  if [[ -s "$SERVER_LOG" ]] && (($(wc -c <"$SERVER_LOG") > LOG_OFFSET)); then
    echo "----- last 40 lines of $SERVER_LOG -----" >&2
    tail -c +$((LOG_OFFSET + 1)) "$SERVER_LOG" | tail -n 40 >&2
  fi
  if [[ -s "$STDOUT_LOG" ]]; then
    echo "----- last 40 lines of $STDOUT_LOG (JVM stdout/stderr) -----" >&2
    tail -n 40 "$STDOUT_LOG" >&2
  fi
  echo "-----" >&2
}

write_config() {
  cat >"$PROPS" <<EOF
# Written by deploy/kafka/broker.sh on every start; edits here are overwritten.
# Single-node Kafka $KAFKA_VERSION in KRaft combined mode (broker + controller in one JVM).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$BROKER_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$BROKER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER

log.dirs=$DATA_DIR
num.partitions=4
auto.create.topics.enable=true
default.replication.factor=1

# Only one broker: internal topics cannot be replicated.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# Allow messages up to 16 MiB.
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
EOF
}

# --- subcommands -------------------------------------------------------------

cmd_install() {
  [[ -f "$MARKER_JAR" ]] && return 0
  command -v mvn >/dev/null 2>&1 || die "Maven (mvn) not found; it is needed once to fetch the Kafka jars from Maven Central."
  say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS (one time, takes a minute)..."
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -q -B -Dstyle.color=never -f "$SCRIPT_DIR/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp"; then
    rm -rf "$tmp"
    die "Maven could not fetch the jars (network? proxy? see the Maven output above)."
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || { rm -rf "$tmp"; die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is missing."; }
  # Swap in the complete set only now, so an interrupted download never looks installed.
  if [[ -f "$MARKER_JAR" ]]; then
    rm -rf "$tmp"  # someone else finished first
  else
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
  fi
  say "installed $(ls "$LIBS" | wc -l) jars into $LIBS"
}

cmd_start() {
  need_java
  need_python
  local pid rc
  if pid="$(broker_pid)"; then
    if wait_ready "$pid"; then
      say "already running (pid $pid) on 127.0.0.1:$BROKER_PORT, folder $BROKER_DIR"
      exit 0
    fi
    show_log_tail
    die "a broker process (pid $pid) exists but does not answer on 127.0.0.1:$BROKER_PORT ($LAST_PING_ERROR). Try: $0 stop && $0 start"
  fi
  for port in "$BROKER_PORT" "$CONTROLLER_PORT"; do
    if port_in_use "$port"; then
      die "port $port on 127.0.0.1 is already used by another program (another broker?). Stop it, or choose other ports with FUSION_BROKER_PORT / FUSION_CONTROLLER_PORT."
    fi
  done

  cmd_install
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  write_config

  local java_opts=(
    -Xms256m "-Xmx$HEAP"
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    "-Dkafka.logs.dir=$LOG_DIR"
    "-Dlog4j2.configurationFile=$LOG4J_CONF"
  )

  if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
    local cluster_id
    cluster_id="$("$JAVA" "${java_opts[@]}" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid)"
    say "formatting storage in $DATA_DIR (cluster id $cluster_id)"
    # Static quorum (controller.quorum.voters): plain format; --standalone is only for dynamic quorums.
    if ! "$JAVA" "${java_opts[@]}" -cp "$LIBS/*" kafka.tools.StorageTool \
        format -t "$cluster_id" -c "$PROPS" >>"$LOG_DIR/format.log" 2>&1; then
      cat "$LOG_DIR/format.log" >&2
      die "formatting the storage failed (see above)."
    fi
  fi

  say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$BROKER_PORT (controller :$CONTROLLER_PORT, folder $BROKER_DIR)..."
  local started=$SECONDS
  [[ -f "$SERVER_LOG" ]] && LOG_OFFSET=$(wc -c <"$SERVER_LOG")
  # setsid: own session, so Ctrl-C in this terminal does not kill the broker.
  # stdin/stdout/stderr are detached, so callers capturing our output never hang on the JVM.
  (cd "$BROKER_DIR" && exec nohup setsid "$JAVA" "${java_opts[@]}" -cp "$LIBS/*" kafka.Kafka "$PROPS" \
      >"$STDOUT_LOG" 2>&1 </dev/null) &
  pid=$!
  echo "$pid" >"$PID_FILE"

  rc=0
  wait_ready "$pid" || rc=$?
  if ((rc == 0)); then
    say "up after $((SECONDS - started)) s (pid $pid). Bootstrap servers: 127.0.0.1:$BROKER_PORT"
    say "logs: $0 logs    stop: $0 stop"
    return 0
  fi
  show_log_tail
  if ((rc == 2)); then
    rm -f "$PID_FILE"
    die "the broker process exited during startup (see the log above)."
  fi
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  die "the broker did not answer on 127.0.0.1:$BROKER_PORT within ${START_TIMEOUT}s (last error: $LAST_PING_ERROR); it was killed. See the log above."
}

cmd_stop() {
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "$PID_FILE"
    say "not running (folder $BROKER_DIR)"
    return 0
  fi
  say "stopping broker (pid $pid)..."
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 40; i++)); do
    broker_pid >/dev/null || break
    sleep 0.5
  done
  if broker_pid >/dev/null; then
    say "did not exit within 20 s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
      broker_pid >/dev/null || break
      sleep 0.25
    done
  fi
  rm -f "$PID_FILE"
  say "stopped"
}

cmd_status() {
  need_python
  if port_in_use "$BROKER_PORT" && admin_ping 3 2>/dev/null; then
    echo "up"
    return 0
  fi
  echo "down"
  return 1
}

cmd_reset() {
  cmd_stop
  if [[ ! -e "$BROKER_DIR" ]]; then
    say "nothing to delete ($BROKER_DIR does not exist)"
    return 0
  fi
  # Refuse obviously wrong targets (e.g. FUSION_BROKER_DIR=.) before rm -rf.
  local real
  real="$(cd "$BROKER_DIR" && pwd -P)"
  case "$real" in
    / | "$(cd "$HOME" && pwd -P)" | "$(cd "$REPO_ROOT" && pwd -P)")
      die "refusing to delete $real: FUSION_BROKER_DIR must point to a dedicated broker folder." ;;
  esac
  if [[ ! -f "$real/server.properties" && ! -d "$real/data" && ! -d "$real/logs" ]]; then
    die "refusing to delete $real: it does not look like a broker folder (no server.properties, data/ or logs/)."
  fi
  rm -rf "$real"
  say "deleted $real"
}

cmd_logs() {
  [[ -f "$SERVER_LOG" ]] || die "no log yet at $SERVER_LOG (has the broker been started with this FUSION_BROKER_DIR?)"
  if [[ -t 1 ]]; then
    say "following $SERVER_LOG (Ctrl-C to quit)"
    exec tail -n 100 -F "$SERVER_LOG"
  fi
  tail -n 100 "$SERVER_LOG"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  logs) cmd_logs ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
