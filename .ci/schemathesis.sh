#!/usr/bin/env bash
# Runs schemathesis (from PyPI, in a virtualenv) against the live service with the fake
# upstream, over every operation of /openapi.json, for a bounded number of examples.
# Fails on a server error, a response that violates its schema, or an undocumented status.
# Expects debug builds of threadkeeper and fake-openrouter in target/debug.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
if [ ! -x "$VENV/bin/schemathesis" ]; then
  if ! python3 -m venv "$VENV"; then
    echo "schemathesis needs python3's venv module (Debian/Ubuntu: apt install python3-venv)" >&2
    exit 1
  fi
  "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

work=$(mktemp -d)
cleanup() {
  [ -n "${service_pid:-}" ] && kill "$service_pid" 2>/dev/null || true
  [ -n "${fake_pid:-}" ] && kill "$fake_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The fake upstream prints its URL on stdout; the service logs its address on stderr.
target/debug/fake-openrouter --bind 127.0.0.1:0 > "$work/fake.out" 2>&1 &
fake_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/fake.out" && break; sleep 0.1; done
fake_url=$(grep -o 'http://[^ ]*' "$work/fake.out" | head -n 1)

OPENROUTER_API_KEY=schemathesis-key RUST_LOG=warn,threadkeeper::cli=info \
  target/debug/threadkeeper serve --bind 127.0.0.1:0 \
  --database-url "sqlite://$work/st.db" --upstream-url "$fake_url" \
  --upstream-timeout 5s > "$work/service.log" 2>&1 &
service_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/service.log" && break; sleep 0.1; done
addr=$(grep -o 'listening on [0-9.:]*' "$work/service.log" | head -n 1 | awk '{print $3}')

# The CLI, with its transports imported first: schemathesis imports them lazily from its
# worker threads, and two workers importing them at once can make one see a half-imported
# module (an ImportError of ASGI_TRANSPORT, seen once in 4,650 cases with 4.32.5).
"$VENV/bin/python" -c '
import sys
import schemathesis.transport.asgi, schemathesis.transport.requests, schemathesis.transport.wsgi
from schemathesis.cli import schemathesis
sys.argv[0] = "schemathesis"
sys.exit(schemathesis())
' run "http://$addr/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" \
  --workers 2 \
  --max-time "${SCHEMATHESIS_MAX_TIME:-120}" \
  --suppress-health-check all \
  --phases "${SCHEMATHESIS_PHASES:-examples,fuzzing,stateful}"

if grep -q "panicked" "$work/service.log"; then
  echo "the service panicked during the schemathesis run:" >&2
  grep -B2 -A10 "panicked" "$work/service.log" >&2
  exit 1
fi
