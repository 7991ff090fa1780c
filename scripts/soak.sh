#!/usr/bin/env bash
# The 10-minute soak run (issue 7; not part of CI): 32 idempotent producers
# and 32 consumers in one group against a release `sluice serve`, broker RSS
# and fds sampled every second. Extra arguments go to scripts/soak.py
# (e.g. --minutes 1 for a short check).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SLUICE_INTEROP_VENV:-target/interop-venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import confluent_kafka" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r scripts/interop-requirements.txt
fi
cargo build -q --release -p sluice
exec "$VENV/bin/python" scripts/soak.py --sluice target/release/sluice "$@"
