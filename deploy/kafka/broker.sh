#!/usr/bin/env bash
# Local single-node Apache Kafka 4.1.1 broker (KRaft combined mode) on 127.0.0.1.
# No Docker, no Apache download site: the jars come from Maven Central via deploy/kafka/pom.xml.
#
# Usage: deploy/kafka/broker.sh {install|start [--secure]|stop|status|reset|logs}
#
# Secure mode (`start --secure` or FUSION_BROKER_SECURE=1): the client listener speaks SASL_SSL
# with SCRAM-SHA-512 users and TLS from a local CA generated with openssl into the broker folder;
# the StandardAuthorizer enforces ACLs (streams/tools/acls.py applies them after start): `ops-<cc>` reads
# only alerts.<cc>, `producer-<cc>` writes only the input topics, `witness-<cc>` reads the audit
# log's leaves and checkpoints and writes cosignatures, `fusion` (the pipeline) and
# `broker` (inter-broker) are super users. Passwords are generated into <folder>/credentials.env
# (mode 600), which also configures a client as the pipeline. The KRaft controller listener stays
# PLAINTEXT on loopback (its ANONYMOUS principal must be a super user: anything that can reach
# 127.0.0.1:<controller port> is trusted). A folder set up secure stays secure until `reset`.
#
# Settings (environment variables, all optional):
#   FUSION_BROKER_PORT       client port (PLAINTEXT)           default 9092
#   FUSION_CONTROLLER_PORT   KRaft controller port              default 9093
#   FUSION_BROKER_DIR        broker folder (config, data, logs) default <repo>/.broker
#   FUSION_BROKER_HEAP       JVM max heap                       default 768m
#   FUSION_KAFKA_LIBS        jar cache                          default ~/.cache/borderfusion/kafka-4.1.1/libs
#   FUSION_PYTHON            python with kafka-python           default <repo>/.venv/bin/python
#   FUSION_BROKER_START_TIMEOUT  seconds to wait for readiness  default 60
#   FUSION_BROKER_SECURE     1 = secure mode (as start --secure) default 0
#   FUSION_PARTNERS          partners, for the per-country users default US,MX
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
SECURE="${FUSION_BROKER_SECURE:-0}"
PARTNERS="${FUSION_PARTNERS:-US,MX}"

MARKER_JAR="$LIBS/kafka_2.13-$KAFKA_VERSION.jar"
DATA_DIR="$BROKER_DIR/data"
LOG_DIR="$BROKER_DIR/logs"
PROPS="$BROKER_DIR/server.properties"
PID_FILE="$BROKER_DIR/broker.pid"
LOG4J_CONF="$SCRIPT_DIR/log4j2.properties"
SERVER_LOG="$LOG_DIR/server.log"
STDOUT_LOG="$LOG_DIR/kafkaServer.out"
TLS_DIR="$BROKER_DIR/tls"
SECURE_MARK="$BROKER_DIR/secure-mode"
PASSWORDS="$BROKER_DIR/scram-passwords"
CREDS="$BROKER_DIR/credentials.env"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

say() { echo "broker: $*"; }
die() { echo "broker: ERROR: $*" >&2; exit 1; }

usage() {
  cat <<EOF
Usage: $0 {install|start [--secure]|stop|status|reset|logs}
  install  fetch the Kafka $KAFKA_VERSION jars from Maven Central into $LIBS (once)
  start    start the broker on 127.0.0.1:$BROKER_PORT (folder $BROKER_DIR) and wait until it answers;
           --secure (or FUSION_BROKER_SECURE=1): SASL_SSL + ACLs, credentials in $CREDS
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
# In secure mode it authenticates as the pipeline's user, read from $CREDS (not from argv).
admin_ping() {
  local secs="${1:-3}" creds=""
  if is_secure; then creds="$CREDS"; fi
  timeout $((secs + 5)) "$PYTHON" - "$BROKER_PORT" "$secs" "$creds" <<'PY'
import logging, sys
logging.disable(logging.CRITICAL)
from kafka.admin import KafkaAdminClient
port, ms, creds = sys.argv[1], int(float(sys.argv[2]) * 1000), sys.argv[3]
auth = {}
if creds:
    with open(creds) as f:
        env = dict(l.split("=", 1) for l in f.read().splitlines() if "=" in l and l[:1] != "#")
    auth = dict(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                sasl_plain_username=env["FUSION_SASL_USERNAME"],
                sasl_plain_password=env["FUSION_SASL_PASSWORD"], ssl_cafile=env["FUSION_SSL_CAFILE"])
try:
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", client_id="broker.sh-ping",
                             request_timeout_ms=ms, bootstrap_timeout_ms=ms, **auth)
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
  local listeners
  if is_secure; then
    listeners="$(secure_listeners)"
  else
    listeners="listeners=PLAINTEXT://127.0.0.1:$BROKER_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$BROKER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT"
  fi
  # Mode 600: in secure mode it holds the broker user's password.
  (umask 077 && cat >"$PROPS" <<EOF
# Written by deploy/kafka/broker.sh on every start; edits here are overwritten.
# Single-node Kafka $KAFKA_VERSION in KRaft combined mode (broker + controller in one JVM).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
$listeners
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
  )
}

# --- secure mode -------------------------------------------------------------

is_secure() { [[ -f "$SECURE_MARK" ]]; }

# The SCRAM users: the pipeline, the broker itself, and per partner its operations center and
# its producers.
scram_users() {
  local cc
  echo fusion
  echo broker
  for cc in ${PARTNERS//,/ }; do
    cc="$(echo "$cc" | tr '[:upper:]' '[:lower:]' | tr -dc 'a-z')"
    if [[ -n "$cc" ]]; then
      echo "ops-$cc"
      echo "producer-$cc"
      echo "witness-$cc"
    fi
  done
}

password_of() { awk -v u="$1" '$1 == u { print $2 }' "$PASSWORDS"; }

# A local CA and a broker certificate for 127.0.0.1/localhost (once per folder). Private keys
# stay in $TLS_DIR (mode 700); clients need only ca.crt.
make_tls() {
  [[ -f "$TLS_DIR/ca.crt" && -f "$TLS_DIR/broker.pem" ]] && return 0
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR" "$LOG_DIR"
  chmod 700 "$TLS_DIR"
  say "making a local CA and the broker certificate in $TLS_DIR"
  if ! (
    set -e
    cd "$TLS_DIR"
    umask 077
    openssl req -x509 -newkey rsa:2048 -noenc -keyout ca.key -out ca.crt -days 825 -sha256 \
      -subj "/CN=border-fusion local CA $(date -u +%Y%m%dT%H%M%SZ)" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -noenc -keyout broker.key -out broker.csr -subj "/CN=localhost"
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >broker.ext
    openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out broker.crt \
      -days 825 -sha256 -extfile broker.ext
    cat broker.key broker.crt >broker.pem
    chmod 644 ca.crt broker.crt
  ) >>"$LOG_DIR/tls.log" 2>&1; then
    cat "$LOG_DIR/tls.log" >&2
    die "making the TLS files failed (see above)."
  fi
}

# One random password per user (once per folder: SCRAM users are created at format time).
make_passwords() {
  local u
  (umask 077 && touch "$PASSWORDS")
  for u in $(scram_users); do
    [[ -n "$(password_of "$u")" ]] || echo "$u $(openssl rand -hex 24)" >>"$PASSWORDS"
  done
}

# credentials.env configures a client as the pipeline (Settings(_env_file=...) or
# `set -a; . credentials.env; set +a`) and lists every user's password as
# FUSION_BROKER_PASSWORD_<USER>.
write_credentials() {
  local u var
  (
    umask 077
    {
      echo "# Written by deploy/kafka/broker.sh start --secure. Secrets: keep this file private."
      echo "FUSION_BOOTSTRAP_SERVERS=127.0.0.1:$BROKER_PORT"
      echo "FUSION_SECURITY_PROTOCOL=SASL_SSL"
      echo "FUSION_SSL_CAFILE=$TLS_DIR/ca.crt"
      echo "FUSION_SASL_USERNAME=fusion"
      echo "FUSION_SASL_PASSWORD=$(password_of fusion)"
      for u in $(scram_users); do
        var="$(echo "$u" | tr '[:lower:]-' '[:upper:]_')"
        echo "FUSION_BROKER_PASSWORD_$var=$(password_of "$u")"
      done
    } >"$CREDS.tmp"
    mv "$CREDS.tmp" "$CREDS"
  )
}

secure_listeners() {
  cat <<EOF
listeners=SECURE://127.0.0.1:$BROKER_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=SECURE://127.0.0.1:$BROKER_PORT
listener.security.protocol.map=SECURE:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SECURE
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.secure.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$(password_of broker)";
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.crt
ssl.endpoint.identification.algorithm=https
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# ANONYMOUS is the principal of the PLAINTEXT controller listener (loopback only).
super.users=User:fusion;User:broker;User:ANONYMOUS
EOF
}

# Apply the per-country ACLs (streams/tools/acls.py) as the pipeline's user; the connection comes from
# $CREDS only, whatever FUSION_* connection settings the caller has.
apply_acls() {
  local out
  if ! out="$(cd "$REPO_ROOT" && env -u FUSION_BOOTSTRAP_SERVERS -u FUSION_SECURITY_PROTOCOL \
      -u FUSION_SASL_USERNAME -u FUSION_SASL_PASSWORD -u FUSION_SSL_CAFILE \
      "$PYTHON" -m streams.tools.acls --env-file "$CREDS" 2>&1)"; then
    echo "$out" >&2
    die "the broker is up but applying the ACLs failed (see above); retry: $PYTHON -m streams.tools.acls --env-file $CREDS"
  fi
  say "ACLs applied: $(echo "$out" | grep -c '^allowed') bindings"
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
  if [[ "$SECURE" == 1 ]]; then
    if [[ -f "$DATA_DIR/meta.properties" ]] && ! is_secure; then
      die "$BROKER_DIR was formatted without SCRAM users; --secure needs a fresh folder: $0 reset (deletes all topics), or another FUSION_BROKER_DIR."
    fi
  elif is_secure; then
    say "$BROKER_DIR was set up secure: starting in secure mode"
  fi
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
  if [[ "$SECURE" == 1 ]] || is_secure; then
    command -v openssl >/dev/null 2>&1 || die "openssl not found; it is needed for --secure (local CA, passwords)."
    chmod 700 "$BROKER_DIR"
    make_tls
    make_passwords
    touch "$SECURE_MARK"
    write_credentials
  fi
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
    # The arguments go through a java @argfile (mode 600, deleted after), so the SCRAM passwords
    # never show on a command line.
    local argfile="$BROKER_DIR/format.args" u
    (
      umask 077
      printf '%s\n' kafka.tools.StorageTool format -t "$cluster_id" -c "\"$PROPS\""
      if is_secure; then
        for u in $(scram_users); do
          printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$u,password=$(password_of "$u")]"
        done
      fi
    ) >"$argfile"
    rc=0
    "$JAVA" "${java_opts[@]}" -cp "$LIBS/*" "@$argfile" >>"$LOG_DIR/format.log" 2>&1 || rc=$?
    rm -f "$argfile"
    if ((rc != 0)); then
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
    if is_secure; then
      apply_acls
      say "up after $((SECONDS - started)) s (pid $pid). SASL_SSL on 127.0.0.1:$BROKER_PORT, CA $TLS_DIR/ca.crt"
      say "credentials (the pipeline's user, every principal's password): $CREDS"
    else
      say "up after $((SECONDS - started)) s (pid $pid). Bootstrap servers: 127.0.0.1:$BROKER_PORT"
    fi
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
  start)
    for arg in "${@:2}"; do
      case "$arg" in
        --secure) SECURE=1 ;;
        *) usage >&2; exit 2 ;;
      esac
    done
    cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  logs) cmd_logs ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
