#!/usr/bin/env bash
# The whole test suite: installs what the interop tests need (kcat from
# Debian, the Python Kafka clients in a venv), checks formatting and lints,
# then runs every test in the workspace. `.ci/run` runs this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
# The security tests make their certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# The rdkafka crate's librdkafka links OpenSSL (TLS and SCRAM interop tests).
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing test dependencies: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python clients for the interop tests, in a venv of the project's own.
VENV="${SLUICE_INTEROP_VENV:-target/interop-venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import kafka, confluent_kafka" 2>/dev/null; then
  echo "creating $VENV with the Python Kafka clients"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r scripts/interop-requirements.txt
fi
export SLUICE_INTEROP_PYTHON="$PWD/$VENV/bin/python"

# Formatting and lints first: they fail in seconds, the suite in minutes.
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

cargo test --workspace
