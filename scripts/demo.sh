#!/usr/bin/env bash
# `npm run demo`: the main job end to end, from a fresh Debian machine as root.
#   packages -> node_modules -> addon (debug build when missing or stale) -> a host Docker engine (the one at
#   DOCKER_HOST / /var/run/docker.sock, else a private dockerd) -> the template image (sandbox-agent + a
#   scripted ACP agent) -> examples/docker-sandbox.ts, which uses the real sbx daemon (or the Desktop plugin)
#   when one answers and the embedded LocalSandboxd's sbx API otherwise. Everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

say() { printf '==> %s\n' "$*"; }
trap 'stop_private_dockerd >/dev/null 2>&1 || true' EXIT

say "checking packages and node_modules"
ensure_packages
ensure_node_modules

node_file=$(ls native/sandboxd.*.node 2>/dev/null | head -1 || true)
if [[ -z "$node_file" || ! -f dist/index.js || -n "$(find src ts Cargo.toml -newer "$node_file" -print -quit)" ]]; then
  say "building the addon (debug)"
  npm run build:debug
fi

if [[ -n "${DOCKER_HOST:-}" ]] && timeout 10 docker version >/dev/null 2>&1; then
  say "host engine: $DOCKER_HOST"
elif [[ -z "${DOCKER_HOST:-}" ]] && [[ -S /var/run/docker.sock ]] && timeout 10 docker version >/dev/null 2>&1; then
  export DOCKER_HOST=unix:///var/run/docker.sock
  say "host engine: $DOCKER_HOST"
else
  unset DOCKER_HOST
  say "no host engine answers: starting a private dockerd"
  start_private_dockerd
fi

say "building the template image on the host engine"
build_test_images >/dev/null
: "${SANDBOXD_AGENT_IMAGE:?the sandbox-agent template image could not be built on this platform}"

say "a fake internet for the network step: a test CA, a certificate, 198.18.0.1 on the loopback"
DEMO_TLS_DIR=$(mktemp -d)
trap 'stop_private_dockerd >/dev/null 2>&1 || true; rm -rf "$DEMO_TLS_DIR"' EXIT
make_test_pki "$DEMO_TLS_DIR" api.demo.test blocked.demo.test
ip -o addr show dev lo | grep -q ' 198.18.0.1/' || ip addr add 198.18.0.1/32 dev lo
export DEMO_TLS_DIR

say "compiling examples/"
npx tsc -p examples

say "running examples/docker-sandbox.ts"
TEMPLATE=$SANDBOXD_AGENT_IMAGE node .tmp/examples/docker-sandbox.js
