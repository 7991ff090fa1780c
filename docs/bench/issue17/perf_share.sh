#!/bin/sh
# Issue #17: the share of the broker's CPU samples in authorization
# (api::authz's gate and fixup, security::acl's checks) while `bench
# produce` loads a broker with `--authorizer acl` and 1000 ACLs: over all
# its samples, and over its user-space samples only (on a busy VM most of
# a broker's CPU is the kernel's scheduler, which moves with the neighbours).
# Usage: perf_share.sh SLUICE_BINARY OUT_DIR BATCH_SIZE
set -e
BIN=$1; OUT=$2; BATCH=$3
HERE=$(dirname "$0")
mkdir -p "$OUT"
for space in all user; do
  DATA=/tmp/authz-perf-data
  rm -rf "$DATA"
  python3 "$HERE/make_acls.py" "$DATA" 1000 >/dev/null
  "$BIN" serve --listen 127.0.0.1:19171 --data-dir "$DATA" --default-partitions 4 --log-level warn --authorizer acl &
  PID=$!
  sleep 1
  EVENT=cpu-clock; [ $space = user ] && EVENT=cpu-clock:u
  perf record -e $EVENT -F 1999 -p $PID -o "$OUT/perf-$BATCH-$space.data" -- sleep 7 2>/dev/null &
  PERF=$!
  "$BIN" bench produce -b 127.0.0.1:19171 --duration-s 5 --warmup-s 1 --batch-size "$BATCH" \
    > "$OUT/perf-produce-$BATCH-$space.txt" 2>&1
  wait $PERF || true
  kill $PID; wait $PID || true
  perf report -i "$OUT/perf-$BATCH-$space.data" --no-children --sort symbol -n 2>/dev/null \
    | grep -v '^#' | grep -v '^$' > "$OUT/perf-$BATCH-$space-flat.txt"
  # Self time (release builds have no frame pointers: callers are not
  # charged their callees), summed over authorization's functions.
  grep -E 'api::authz::|security::acl::' "$OUT/perf-$BATCH-$space-flat.txt" > "$OUT/perf-$BATCH-$space-authz.txt" || true
  awk -v s=$space '{ sub("%", "", $1); p += $1 } END { printf "authorization: %.2f %% of the broker'"'"'s %s samples\n", p, s }' \
    "$OUT/perf-$BATCH-$space-authz.txt"
  tail -1 "$OUT/perf-produce-$BATCH-$space.txt"
done
