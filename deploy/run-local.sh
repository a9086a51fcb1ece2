#!/usr/bin/env bash
# A local tradecast cluster on loopback, for trials by hand: one redis-server (or a
# 3-master Redis Cluster), N nodes sharing it, and nginx in front of them configured by
# deploy/nginx.conf.template (the same file the integration test
# crates/tradecast/tests/nginx.rs runs).
#
#   deploy/run-local.sh                  # 3 nodes, nginx on 127.0.0.1:8080
#   deploy/run-local.sh -n 5 --simulate 200
#   deploy/run-local.sh --cluster        # the nodes on a 3-master Redis Cluster
#   deploy/run-local.sh --duration 10    # start, print, stop after 10 s (a smoke test)
#
# It prints the URLs and a ready token, then runs until Ctrl-C (or --duration), and
# stops everything it started: nginx, the nodes (graceful drain), the simulator,
# redis. Config, logs and data live in a temporary directory, deleted at the end
# (--keep keeps it). Uses target/release/tradecast, building it when missing
# (TRADECAST_BIN overrides the binary).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)

NODES=3
PORT=8080         # nginx
NODE_PORT=8081    # node i listens on NODE_PORT + i - 1 ...
ADMIN_PORT=9101   # ... and its admin listener on ADMIN_PORT + i - 1
REDIS_PORT=6390   # never 6379: a developer's own Redis may be there
CLUSTER=0         # 1: three cluster masters on REDIS_PORT, +1, +2
SIMULATE=0        # events/s written by `tradecast simulate` (0: none)
DURATION=         # seconds; empty: until Ctrl-C
KEEP=0
SECRET=${TRADECAST_JWT_SECRET:-local-secret-change-me}

usage() {
  cat <<EOF
usage: $0 [options]
  -n, --nodes N         nodes behind nginx (default $NODES)
  -p, --port P          nginx port (default $PORT)
      --node-port P     first node's public port (default $NODE_PORT)
      --admin-port P    first node's admin port (default $ADMIN_PORT)
      --redis-port P    redis-server port (default $REDIS_PORT; 6379 is refused)
      --cluster         a 3-master Redis Cluster on --redis-port and the next two
                        ports instead of one server (streams {tc}:events, {tc}:ticks)
      --secret S        JWT secret (default \$TRADECAST_JWT_SECRET or a local one)
      --simulate RATE   also run the trade simulator at RATE events/s
      --duration S      stop after S seconds instead of waiting for Ctrl-C
      --keep            keep the temporary directory (config, logs)
EOF
}

die() { echo "run-local: $*" >&2; exit 1; }
number() { [[ $2 =~ ^[0-9]+$ ]] || die "$1 needs a number, got '$2'"; echo "$2"; }

while [ $# -gt 0 ]; do
  case $1 in
    -n|--nodes) NODES=$(number "$1" "${2-}"); shift 2 ;;
    -p|--port) PORT=$(number "$1" "${2-}"); shift 2 ;;
    --node-port) NODE_PORT=$(number "$1" "${2-}"); shift 2 ;;
    --admin-port) ADMIN_PORT=$(number "$1" "${2-}"); shift 2 ;;
    --redis-port) REDIS_PORT=$(number "$1" "${2-}"); shift 2 ;;
    --secret) SECRET=${2-}; [ -n "$SECRET" ] || die "--secret needs a value"; shift 2 ;;
    --simulate) SIMULATE=$(number "$1" "${2-}"); shift 2 ;;
    --duration) DURATION=$(number "$1" "${2-}"); shift 2 ;;
    --keep) KEEP=1; shift ;;
    --cluster) CLUSTER=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
[ "$NODES" -ge 1 ] || die "--nodes must be at least 1"
REDIS_PORTS=("$REDIS_PORT")
[ "$CLUSTER" = 0 ] || REDIS_PORTS=("$REDIS_PORT" $((REDIS_PORT + 1)) $((REDIS_PORT + 2)))
for p in "${REDIS_PORTS[@]}"; do
  [ "$p" != 6379 ] || die "--redis-port: 6379 is a developer's own Redis; pick another"
done

# --- tools -------------------------------------------------------------------------
find_nginx() {
  command -v nginx 2>/dev/null && return
  for candidate in /usr/sbin/nginx /usr/local/sbin/nginx /usr/local/nginx/sbin/nginx; do
    [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
  die "nginx is not installed (Debian: apt-get install nginx)"
}
NGINX=$(find_nginx)
REDIS_SERVER=$(command -v redis-server) || die "redis-server is not installed (Debian: apt-get install redis-server)"
REDIS_CLI=$(command -v redis-cli) || die "redis-cli is not installed (Debian: apt-get install redis-tools)"
BIN=${TRADECAST_BIN:-$ROOT/target/release/tradecast}
if [ ! -x "$BIN" ]; then
  echo "run-local: building $BIN" >&2
  (cd "$ROOT" && cargo build --release -p tradecast)
fi

# --- ports -------------------------------------------------------------------------
PORTS=("$PORT" "${REDIS_PORTS[@]}")
for ((i = 0; i < NODES; i++)); do PORTS+=($((NODE_PORT + i)) $((ADMIN_PORT + i))); done
dupes=$(printf '%s\n' "${PORTS[@]}" | sort | uniq -d)
[ -z "$dupes" ] || die "port ranges overlap on: $dupes (see --help)"
for p in "${PORTS[@]}"; do
  [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || die "port $p is out of range"
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "127.0.0.1:$p is already in use (see --help for the port options)"
  fi
done

# --- processes, and stopping them ----------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tradecast-local.XXXXXX")
chmod 755 "$WORK"   # nginx workers run as nobody when started by root
mkdir -p "$WORK/logs" "$WORK/nginx/logs" "$WORK/nginx/temp"

NAMES=()   # parallel arrays: what was started, in order
PIDS=()

# Stop every process started here, newest first (nginx before the nodes, the nodes
# before redis): SIGTERM, up to 5 s each to exit (a node drains for --drain-ms), then
# SIGKILL. Only the pids recorded above are signalled.
cleanup() {
  trap - EXIT INT TERM
  local i t
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || continue
    for ((t = 0; t < 50; t++)); do
      kill -0 "${PIDS[i]}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${PIDS[i]}" 2>/dev/null; then
      echo "run-local: ${NAMES[i]} did not stop; killing it" >&2
      kill -KILL "${PIDS[i]}" 2>/dev/null || true
    fi
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ]; then
    echo "run-local: stopped; config and logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
    echo "run-local: stopped" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOG COMMAND...: run COMMAND in the background, logging to LOG.
start() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1 &
  NAMES+=("$name")
  PIDS+=($!)
}

# The status code of `GET path` on 127.0.0.1:port, or nothing.
http_status() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
    read -r -t 2 _ status _ <&3 && echo "$status"
  ) 2>/dev/null || true
}

# wait_until SECONDS WHAT COMMAND...: poll COMMAND every 0.1 s; give up (with the log
# of the newest process) after SECONDS or when that process exits.
wait_until() {
  local limit=$1 what=$2 t
  shift 2
  local n=$((${#PIDS[@]} - 1))
  for ((t = 0; t < limit * 10; t++)); do
    "$@" && return 0
    kill -0 "${PIDS[n]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "run-local: $what did not come up; the end of its log:" >&2
  tail -n 20 "$LAST_LOG" >&2 || true
  exit 1
}

redis_up() { [ "$("$REDIS_CLI" -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }
cluster_ok() {
  "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}
ready() { [ "$(http_status "$1" /readyz)" = 200 ]; }
answers() { [ -n "$(http_status "$1" /ws)" ]; }

# --- redis ------------------------------------------------------------------------
for p in "${REDIS_PORTS[@]}"; do
  mkdir -p "$WORK/redis-$p"
  LAST_LOG=$WORK/logs/redis-$p.log
  cluster_args=()
  [ "$CLUSTER" = 0 ] || cluster_args=(--cluster-enabled yes --cluster-config-file nodes.conf)
  start "redis $p" "$LAST_LOG" "$REDIS_SERVER" --bind 127.0.0.1 --port "$p" \
    --save '' --appendonly no --dir "$WORK/redis-$p" "${cluster_args[@]}"
  wait_until 10 "redis-server on $p" redis_up "$p"
done
# What the nodes, the simulator and `publish` are given.
STREAM_ARGS=(--redis "redis://127.0.0.1:$REDIS_PORT/")
if [ "$CLUSTER" = 1 ]; then
  "$REDIS_CLI" --cluster create "${REDIS_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 \
    --cluster-yes >"$WORK/logs/cluster-create.log" 2>&1 \
    || { cat "$WORK/logs/cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
  wait_until 10 "the Redis Cluster" cluster_ok
  seeds=$(printf 'redis://127.0.0.1:%s,' "${REDIS_PORTS[@]}")
  # On a cluster the two ingest streams must share a hash tag (docs/operations.md §10.6).
  STREAM_ARGS=(--redis "${seeds%,}" --redis-cluster
    --events-stream '{tc}:events' --ticks-stream '{tc}:ticks')
fi

# --- nodes ------------------------------------------------------------------------
export TRADECAST_JWT_SECRET=$SECRET   # not on the command line, where ps shows it
export NO_COLOR=1                      # plain node logs in files
NODE_ADDRS=()
for ((i = 1; i <= NODES; i++)); do
  public=127.0.0.1:$((NODE_PORT + i - 1))
  admin=127.0.0.1:$((ADMIN_PORT + i - 1))
  NODE_ADDRS+=("$public")
  LAST_LOG=$WORK/logs/node$i.log
  start "node $i" "$LAST_LOG" "$BIN" serve "${STREAM_ARGS[@]}" \
    --listen "$public" --admin-listen "$admin" --drain-ms 2000
  wait_until 30 "node $i" ready $((ADMIN_PORT + i - 1))
done

# --- nginx ------------------------------------------------------------------------
# The template's placeholders: @LISTEN@, and one copy of each @NODE@ line per node;
# comment lines are copied as they are (same rule as tests/support/nginx.rs).
awk -v listen="127.0.0.1:$PORT" -v nodes="${NODE_ADDRS[*]}" '
  BEGIN { n = split(nodes, node, " ") }
  /^[ \t]*#/ { print; next }
  /@NODE@/ { for (i = 1; i <= n; i++) { line = $0; gsub(/@NODE@/, node[i], line); print line }; next }
  { gsub(/@LISTEN@/, listen); print }
' "$ROOT/deploy/nginx.conf.template" >"$WORK/nginx/nginx.conf"
LAST_LOG=$WORK/nginx/logs/stderr.log
start nginx "$LAST_LOG" "$NGINX" -e stderr -p "$WORK/nginx/" -c "$WORK/nginx/nginx.conf" \
  -g 'daemon off;'
wait_until 10 "nginx" answers "$PORT"

# --- simulator (optional) -----------------------------------------------------------
if [ "$SIMULATE" -gt 0 ]; then
  LAST_LOG=$WORK/logs/simulate.log
  start simulator "$LAST_LOG" "$BIN" simulate "${STREAM_ARGS[@]}" --rate "$SIMULATE" \
    --traders 100
  TRADER=100001   # the simulator's first trader
else
  TRADER=42
fi
TOKEN=$("$BIN" token --sub "$TRADER" --role client --ttl 86400)

cat <<EOF

tradecast: $NODES node(s) on $([ "$CLUSTER" = 1 ] && echo "a 3-master Redis Cluster" || echo "one Redis"), behind nginx (everything on 127.0.0.1)

  WebSocket, through nginx   ws://127.0.0.1:$PORT/ws?token=<JWT>
  dashboard page             http://127.0.0.1:$PORT/
  a trader token (sub $TRADER, 24 h)
    $TOKEN
  more tokens                TRADECAST_JWT_SECRET='$SECRET' $BIN token --sub ID --role client|ib|admin

EOF
for ((i = 1; i <= NODES; i++)); do
  printf '  node %d   ws://%s/ws   admin http://127.0.0.1:%d/metrics\n' \
    "$i" "${NODE_ADDRS[i - 1]}" $((ADMIN_PORT + i - 1))
done
cat <<EOF
  redis    ${STREAM_ARGS[*]}
  events   $BIN publish ${STREAM_ARGS[*]} FILE.jsonl   (or --simulate RATE)
  files    $WORK (nginx.conf and logs under nginx/, node logs under logs/)

Ctrl-C stops everything.
EOF

# Run until Ctrl-C, --duration, or one of the processes dies.
start_time=$SECONDS
while sleep 1; do
  for ((i = 0; i < ${#PIDS[@]}; i++)); do
    if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
      echo "run-local: ${NAMES[i]} exited; stopping everything" >&2
      exit 1
    fi
  done
  if [ -n "$DURATION" ] && [ $((SECONDS - start_time)) -ge "$DURATION" ]; then
    exit 0
  fi
done
