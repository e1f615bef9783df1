#!/usr/bin/env bash
# make demo: a ppz-server and a daemon in the background, state under .demo/, and a short tour.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/.venv/bin
DEMO=$ROOT/.demo
export PPZ_SERVER_DATA=$DEMO/server
export PPZ_HTTP_ADDR=${PPZ_HTTP_ADDR:-127.0.0.1:8080}
export PPZ_NATS_ADDR=${PPZ_NATS_ADDR:-127.0.0.1:4222}
export PPZ_HOME=$DEMO/home
export PPZ_SESSION=demo
unset PPZ_IPC_SOCKET PPZ_CURRENT_HANDLE

"$ROOT/scripts/demo-stop.sh" >/dev/null 2>&1 || true
mkdir -p "$DEMO"

KEY=$("$BIN/ppz-server" add-key --account=demo)
"$BIN/ppz-server" serve >>"$DEMO/server.log" 2>&1 &
echo $! >"$DEMO/server.pid"
for _ in $(seq 1 100); do
  if "$BIN/python" -c "import urllib.request,sys; urllib.request.urlopen('http://$PPZ_HTTP_ADDR/healthz', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done

run() { printf '\n$ %s\n' "$*"; "$@"; }

run "$BIN/ppz" login "http://$PPZ_HTTP_ADDR" --apikey "$KEY"
for h in alice bob; do
  "$BIN/ppz" source create "$h" 2>/dev/null || true
done
run "$BIN/ppz" set handle alice
run "$BIN/ppz" send bob "hello from alice"
run env PPZ_CURRENT_HANDLE=bob "$BIN/ppz" read inbox
run "$BIN/ppz" status
run "$BIN/ppz" ls

cat <<EOT

The demo is running: ppz-server on http://$PPZ_HTTP_ADDR (NATS on $PPZ_NATS_ADDR) and a daemon
for PPZ_HOME=$PPZ_HOME.

Web console: http://$PPZ_HTTP_ADDR/ui/  (sign in with the API key $KEY)

Use it from your own shell:

  export PATH=$BIN:\$PATH PPZ_HOME=$PPZ_HOME
  ppz status
  ppz send bob "hi again"
  PPZ_CURRENT_HANDLE=bob ppz read inbox

Stop everything with:  make demo-stop
EOT
