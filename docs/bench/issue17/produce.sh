#!/bin/sh
# Issue #17: a produce load against a PLAINTEXT broker with `--authorizer
# acl` and 1000 ACLs (make_acls.py) and against the same broker without an
# authorizer, interleaved, a fresh broker and data directory each run.
# Usage: produce.sh SLUICE_BINARY OUT_DIR [ROUNDS]
set -e
BIN=$1; OUT=$2; ROUNDS=${3:-4}
HERE=$(dirname "$0")
mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  # Odd rounds start with the authorizer, even ones without.
  order="acl none"; [ $((r % 2)) -eq 0 ] && order="none acl"
  for which in $order; do
    DATA=/tmp/authz-bench-$which
    rm -rf "$DATA"
    FLAGS=""
    if [ "$which" = acl ]; then
      python3 "$HERE/make_acls.py" "$DATA" 1000 >/dev/null
      FLAGS="--authorizer acl"
    fi
    # shellcheck disable=SC2086
    "$BIN" serve --listen 127.0.0.1:19170 --data-dir "$DATA" --default-partitions 4 --log-level warn $FLAGS &
    PID=$!
    sleep 1
    # 100-byte records in 16 KiB batches (about 160 records a request) ...
    "$BIN" bench produce -b 127.0.0.1:19170 --duration-s 5 --warmup-s 1 \
      --json "$OUT/produce-16k-$which-r$r.json" > "$OUT/produce-16k-$which-r$r.txt" 2>&1
    # ... and one record a request: the per-request cost, magnified ...
    "$BIN" bench produce -b 127.0.0.1:19170 --duration-s 5 --warmup-s 1 --batch-size 100 \
      --json "$OUT/produce-1rec-$which-r$r.json" > "$OUT/produce-1rec-$which-r$r.txt" 2>&1
    # ... and paced at 8,000 requests/s: the broker's CPU for the same work.
    "$BIN" bench produce -b 127.0.0.1:19170 --duration-s 5 --warmup-s 1 --batch-size 100 --rate 8000 \
      --json "$OUT/produce-paced-$which-r$r.json" > "$OUT/produce-paced-$which-r$r.txt" 2>&1
    kill $PID; wait $PID || true
  done
done
