#!/usr/bin/env bash
# `npm run bench [-- --quick]`: the performance targets, measured side by side with dockerode, the docker CLI
# and curl glue, written to BENCHMARKS.md (bench/run.mjs does the measuring).
#
#   packages (docker.io, busybox, curl) -> node_modules -> the built addon (never built here)
#   -> the raw Rust floors for T3, T8 and T9 (bench/floor/stream_floor.rs, sbx_floor.rs, proxy_floor.rs,
#      policy_floor.rs, built here)
#   -> Docker engine: $DOCKER_HOST if it answers, else a private dockerd (scripts/lib.sh), stopped on exit
#   -> test image (build_test_images) -> node bench/run.mjs "$@"
#
# The VM engine (T4), sandboxd (T5) and the sbx sandbox (T8) come from LocalSandboxd, which run.mjs starts and stops itself.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

cleanup() {
  local rc=$?
  set +e
  if [[ -n "$SBX_DOCKERD_DIR" ]]; then
    sbx_log "==> stopping the private dockerd"
    stop_private_dockerd
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sbx_log "==> packages"
ensure_packages
if ! command -v curl >/dev/null 2>&1; then
  _sbx_apt_install curl
fi

sbx_log "==> node_modules"
ensure_node_modules
if [[ ! -d node_modules/dockerode ]]; then
  sbx_log "dockerode missing from node_modules: npm install"
  npm install --no-audit --no-fund
fi

if ! compgen -G 'native/sandboxd.*.node' >/dev/null || [[ ! -f dist/index.js ]]; then
  sbx_err "no built package (native/sandboxd.*.node, dist/): run 'npm run build' first (the bench never builds it)"
  exit 1
fi

sbx_log "==> the raw Rust floors for T3, T8 and T9 (bench/floor, cargo profile bench-helper)"
cargo build --quiet --profile bench-helper --example stream-floor --example sbx-floor \
  --example proxy-floor --example policy-floor --no-default-features

sbx_log "==> docker engine"
if [[ -n "${DOCKER_HOST:-}" ]] && timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  sbx_log "using the engine already at DOCKER_HOST=$DOCKER_HOST (not stopped afterwards)"
else
  if [[ -n "${DOCKER_HOST:-}" ]]; then
    sbx_log "DOCKER_HOST=$DOCKER_HOST does not answer; starting a private dockerd"
    unset DOCKER_HOST
  fi
  # shellcheck disable=SC2119 # no DIR: a fresh mktemp dir
  start_private_dockerd
fi

sbx_log "==> test images (busybox; sandbox-agent for T7)"
build_test_images

export PATH # dockerd (for LocalSandboxd's VMs) lives in /usr/sbin; lib.sh added it
sbx_log "==> node bench/run.mjs $*"
node bench/run.mjs "$@"

# T7 (agent events over the exec tunnel) appends its section to the report run.mjs just wrote.
report=BENCHMARKS.md
for a in "$@"; do [[ $a == --quick ]] && report=.tmp/BENCHMARKS.quick.md; done
if [[ " $* " == *" --out "* ]]; then
  sbx_log "T7: --out given; printing only"
  report=""
fi
only=""
prev=""
for a in "$@"; do [[ $prev == --only ]] && only=${a^^}; prev=$a; done
if [[ -n "$only" && ",$only," != *",T7,"* ]]; then
  sbx_log "T7: not in --only $only; skipped"
elif [[ -n "${SANDBOXD_AGENT_IMAGE:-}" ]]; then
  sbx_log "==> node bench/t7.mjs"
  node bench/t7.mjs "$report" "$@"
else
  sbx_err "T7 skipped: no sandbox-agent image for this platform"
  exit 1
fi
