#!/usr/bin/env bash
# A local three-broker Sluice cluster for trying cluster mode by hand: one
# etcd and `sluice serve` nodes 1, 2 and 3 on 127.0.0.1:19092, 19093 and
# 19094 (metrics on 19192–19194), data and logs under ./cluster-data/. Runs
# in the foreground; Ctrl-C stops everything it started.
#
#   scripts/cluster.sh                 # start (builds target/release/sluice if missing)
#   scripts/cluster.sh --log-level debug   # extra flags go to every broker
#   SLUICE_BIN=path/to/sluice scripts/cluster.sh
#   SLUICE_CLUSTER_DATA=/tmp/c scripts/cluster.sh
#   scripts/cluster.sh --clean         # delete ./cluster-data first
#
# Environment: SLUICE_BIN (the broker binary), SLUICE_CLUSTER_DATA (data
# root, default ./cluster-data), SLUICE_CLUSTER_PORT (first Kafka port,
# default 19092), SLUICE_ETCD_PORT (etcd client port, default 12379; its
# peer port is one above), ETCD (the etcd binary, default /usr/bin/etcd).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${SLUICE_CLUSTER_DATA:-$PWD/cluster-data}"
BASE="${SLUICE_CLUSTER_PORT:-19092}"
ETCD_PORT="${SLUICE_ETCD_PORT:-12379}"
ETCD_PEER=$((ETCD_PORT + 1))
ETCD="${ETCD:-/usr/bin/etcd}"
NODES=(1 2 3)

if [ "${1:-}" = "--clean" ]; then
  shift
  echo "removing $DATA"
  rm -rf "$DATA"
fi

if [ ! -x "$ETCD" ]; then
  echo "etcd not found at $ETCD: install Debian's etcd-server (sudo apt-get install etcd-server) or set ETCD" >&2
  exit 1
fi

if [ -n "${SLUICE_BIN:-}" ]; then
  BIN="$SLUICE_BIN"
elif [ -x target/release/sluice ]; then
  BIN="target/release/sluice"
  echo "using $BIN (run \`cargo build --release -p sluice\` to refresh it)"
else
  echo "building target/release/sluice"
  cargo build --release -p sluice
  BIN="target/release/sluice"
fi

port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for p in "$ETCD_PORT" "$ETCD_PEER" $(for n in "${NODES[@]}"; do echo $((BASE + n - 1)) $((BASE + 100 + n - 1)); done); do
  if port_busy "$p"; then
    echo "127.0.0.1:$p is already in use (another cluster.sh running?)" >&2
    exit 1
  fi
done

mkdir -p "$DATA"
PIDS=()
NAMES=()

stopped=""
stop_all() {
  [ -n "$stopped" ] && return
  stopped=1
  echo
  echo "stopping the cluster"
  # Brokers first (SIGTERM: a clean shutdown), then etcd.
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    if kill -0 "${PIDS[$i]}" 2>/dev/null; then
      kill -TERM "${PIDS[$i]}" 2>/dev/null || true
      wait "${PIDS[$i]}" 2>/dev/null || true
      echo "  ${NAMES[$i]} (pid ${PIDS[$i]}) stopped"
    fi
  done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

"$ETCD" --name n0 --data-dir "$DATA/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "n0=http://127.0.0.1:$ETCD_PEER" \
  --heartbeat-interval 50 --election-timeout 250 \
  --logger zap --log-outputs stderr --log-level warn \
  >>"$DATA/etcd.log" 2>&1 &
PIDS+=($!)
NAMES+=("etcd")

healthy=""
for _ in $(seq 100); do
  if ! kill -0 "${PIDS[0]}" 2>/dev/null; then break; fi
  if command -v curl >/dev/null 2>&1; then
    curl -fsS "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"' && healthy=1 && break
  elif port_busy "$ETCD_PORT"; then
    healthy=1 && break
  fi
  sleep 0.1
done
if [ -z "$healthy" ]; then
  echo "etcd did not become healthy; $DATA/etcd.log:" >&2
  tail -n 20 "$DATA/etcd.log" >&2
  exit 1
fi
echo "etcd on 127.0.0.1:$ETCD_PORT (data $DATA/etcd)"

BOOTSTRAP=""
for n in "${NODES[@]}"; do
  port=$((BASE + n - 1))
  mport=$((BASE + 100 + n - 1))
  log="$DATA/broker-$n.log"
  echo "===== cluster.sh: starting broker $n $(date -Is) =====" >>"$log"
  "$BIN" serve \
    --node-id "$n" \
    --cluster "etcd://127.0.0.1:$ETCD_PORT" \
    --cluster-prefix /sluice \
    --listen "127.0.0.1:$port" \
    --advertised-listener "127.0.0.1:$port" \
    --metrics-listen "127.0.0.1:$mport" \
    --data-dir "$DATA/broker-$n" \
    --default-replication-factor 3 \
    "$@" >>"$log" 2>&1 &
  PIDS+=($!)
  NAMES+=("broker $n")
  BOOTSTRAP="${BOOTSTRAP:+$BOOTSTRAP,}127.0.0.1:$port"
done

# Each broker prints "sluice listening on" once it serves.
for i in "${!NODES[@]}"; do
  n=${NODES[$i]}
  pid=${PIDS[$((i + 1))]}
  log="$DATA/broker-$n.log"
  up=""
  for _ in $(seq 300); do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    # Only this run's part of the log.
    if sed -n '/===== cluster.sh: starting/h; /===== cluster.sh: starting/!H; ${x;p}' "$log" | grep -q "sluice listening on"; then
      up=1
      break
    fi
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "broker $n did not start; the end of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  echo "broker $n on 127.0.0.1:$((BASE + n - 1)) (metrics http://127.0.0.1:$((BASE + 100 + n - 1))/metrics, data $DATA/broker-$n, log $log)"
done

cat <<EOF

The cluster is up. Try:
  kcat -b 127.0.0.1:$BASE -L
  echo hello | kcat -b 127.0.0.1:$BASE -P -t demo        # auto-created, replication factor 3
  kcat -b 127.0.0.1:$((BASE + 1)) -C -t demo -o beginning -e
  kcat -b 127.0.0.1:$((BASE + 2)) -L -t demo              # leader, replicas, ISR
  $BIN topic describe -b 127.0.0.1:$BASE demo
  curl -s http://127.0.0.1:$((BASE + 100))/metrics | grep cluster
bootstrap.servers=$BOOTSTRAP
Logs: $DATA/*.log. Press Ctrl-C to stop everything.
EOF

# Until Ctrl-C (the trap stops everything), or until one of them exits by
# itself: then say which, with the end of its log, and stop the rest.
set +e
wait -n "${PIDS[@]}"
for i in "${!PIDS[@]}"; do
  if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
    log="$DATA/${NAMES[$i]// /-}.log"
    echo "${NAMES[$i]} (pid ${PIDS[$i]}) exited; the end of $log:" >&2
    tail -n 10 "$log" >&2
  fi
done
exit 1
