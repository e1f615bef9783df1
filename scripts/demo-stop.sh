#!/usr/bin/env bash
# make demo-stop: stop the demo's daemon and ppz-server (its nats-server child goes with it).
set -uo pipefail
cd "$(dirname "$0")/.."
DEMO=$PWD/.demo
PPZ_HOME=$DEMO/home "$PWD/.venv/bin/ppz" daemon stop || true
if [ -f "$DEMO/server.pid" ]; then
  pid=$(cat "$DEMO/server.pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "ppz-server stopped pid=$pid"
  fi
  rm -f "$DEMO/server.pid"
fi
