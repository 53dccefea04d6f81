#!/usr/bin/env bash
# `npm test`: everything CI checks, from a fresh Debian machine, as root.
#
#   packages -> node_modules -> debug addon build (skip: SANDBOXD_SKIP_BUILD=1)
#   -> private dockerd (unless $DOCKER_HOST already answers) -> test images
#   (busybox + sandbox-agent, see scripts/lib.sh)
#   -> cargo test --no-default-features -> tsc -> vitest (.tmp/vitest.json)
#   -> cross-compile targets (scripts/targets.sh: every platform in package.json, and Windows)
#
# Setup steps stop the run at the first failure; the test steps always
# all run, and the script exits non-zero if any of them failed. A dockerd this
# script started is stopped (by PID) on exit, whatever happened.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# Free space on the disk that holds target/ (CI's disk is shared: a full one fails builds, so say what it was).
disk_free() { df -h --output=avail . 2>/dev/null | tail -n1 | tr -d ' ' || echo '?'; }
DISK0=$(disk_free)

T0=$SECONDS
STEP=""
STEP_T0=$SECONDS
STEP_LOG=()  # "name|result|seconds"
FAILED=()

step() {
  STEP=$1
  STEP_T0=$SECONDS
  printf '\n==> %s  [+%ds]\n' "$STEP" $((SECONDS - T0))
}
step_done() { # [result]
  local result=${1:-ok} took=$((SECONDS - STEP_T0))
  printf '==> %s: %s (%ds)\n' "$STEP" "$result" "$took"
  STEP_LOG+=("$STEP|$result|$took")
  STEP=""
}
# run_test_step NAME CMD...: never aborts the script; records failures.
run_test_step() {
  local name=$1 rc=0
  shift
  step "$name"
  "$@" || rc=$?
  if ((rc == 0)); then
    step_done ok
  else
    step_done "FAILED (exit $rc)"
    FAILED+=("$name")
  fi
}

INTERRUPTED=""
finish() {
  local rc=$?
  set +e
  if [[ -n "$STEP" ]]; then
    # set -e or a signal ended the run inside a step
    if [[ -n "$INTERRUPTED" ]]; then
      step_done "INTERRUPTED ($INTERRUPTED)"
    else
      step_done "FAILED (exit $rc)"
    fi
    FAILED+=("${STEP_LOG[-1]%%|*}")
  fi
  if [[ -n "$SBX_DOCKERD_DIR" ]]; then
    step "stop private dockerd"
    stop_private_dockerd
    step_done
  fi
  printf '\n==> summary (%ds total; disk free: %s at the start, %s at the end)\n' $((SECONDS - T0)) \
    "$DISK0" "$(disk_free)"
  local entry name result took
  for entry in "${STEP_LOG[@]}"; do
    IFS='|' read -r name result took <<<"$entry"
    printf '    %-34s %5ss  %s\n' "$name" "$took" "$result"
  done
  if ((${#FAILED[@]})); then
    local joined
    joined=$(printf '%s, ' "${FAILED[@]}")
    printf '==> FAILED: %s\n' "${joined%, }"
    ((rc != 0)) || rc=1
  fi
  exit "$rc"
}
trap finish EXIT
trap 'INTERRUPTED=SIGINT; exit 130' INT
trap 'INTERRUPTED=SIGTERM; exit 143' TERM

mkdir -p .tmp
rm -f .tmp/vitest.json # never report a previous run's results

# ---- setup (fatal on failure) ----------------------------------------------
step "packages"
ensure_packages
step_done

step "node_modules"
ensure_node_modules
step_done

if [[ "${SANDBOXD_SKIP_BUILD:-}" == 1 ]]; then
  step "build addon (debug)"
  step_done "skipped (SANDBOXD_SKIP_BUILD=1)"
else
  step "build addon (debug)"
  npm run build:debug
  step_done

  if [[ -n "${CI:-}" ]]; then
    step "generated native module committed"
    gen_ok=1
    for f in native/index.cjs native/index.d.cts; do
      if ! git ls-files --error-unmatch "$f" >/dev/null 2>&1; then
        echo "$f is not committed." >&2
        gen_ok=0
      fi
    done
    if ! git diff --exit-code -- native/index.cjs native/index.d.cts; then
      gen_ok=0
    fi
    if ((gen_ok)); then
      step_done
    else
      echo "The generated native/index.cjs / native/index.d.cts differ from what is committed:" >&2
      echo "rebuild them (npm run build:debug) and commit them." >&2
      step_done "FAILED (stale generated files)"
      FAILED+=("generated native module committed")
    fi
  fi
fi

step "docker engine"
if [[ -n "${DOCKER_HOST:-}" ]] && timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "using the engine already at DOCKER_HOST=$DOCKER_HOST (not stopped afterwards)"
  step_done "existing"
else
  if [[ -n "${DOCKER_HOST:-}" ]]; then
    echo "DOCKER_HOST=$DOCKER_HOST does not answer; starting a private dockerd"
    unset DOCKER_HOST
  fi
  # shellcheck disable=SC2119 # no DIR: a fresh mktemp dir
  start_private_dockerd
  step_done "started (pid $SBX_DOCKERD_PID)"
fi

step "test images"
build_test_images
docker image ls --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' | sed 's/^/    /'
step_done

echo
echo "env for the tests:"
echo "    DOCKER_HOST=$DOCKER_HOST"
echo "    SANDBOXD_TEST_IMAGE=$SANDBOXD_TEST_IMAGE"
echo "    SANDBOXD_TEST_ROOTFS=$SANDBOXD_TEST_ROOTFS"
echo "    SANDBOXD_AGENT_IMAGE=${SANDBOXD_AGENT_IMAGE:-<not built>}"

# ---- tests (all run; failures collected) -----------------------------------
run_test_step "cargo test --no-default-features (engine tests included)" cargo test --no-default-features -- --include-ignored
run_test_step "tsc --noEmit -p __test__" npx tsc --noEmit -p __test__
run_test_step "tsc -p examples (example + ESM/CJS consumers)" npx tsc -p examples
run_test_step "vitest" npx vitest run --reporter=default --reporter=json --outputFile=.tmp/vitest.json
run_test_step "cross-compile targets" bash scripts/targets.sh --prune

# finish (EXIT trap) stops the engine, prints the summary and sets the exit code
