#!/usr/bin/env bash
# Cross-compile check of every platform the package claims: package.json's napi.targets plus
# x86_64-pc-windows-msvc. For each target:
#
#   check   cargo clippy --lib -D warnings (the crate with the napi binding, as that platform compiles it;
#           warnings fail too, since code gated away from a platform easily leaves dead code behind there)
#   build   napi build --cross-compile (cargo-zigbuild, zig as C compiler and linker), debug profile:
#           the .node file, in target/cross/node/
#   symbol  the .node exports napi_register_module_v1 (llvm-nm: the dynamic table of an ELF file, the external
#           symbols of a Mach-O one)
#
# x86_64-pc-windows-msvc is checked only: linking needs MSVC's link.exe and the Windows SDK's import
# libraries, which no registry reachable here provides (cargo-xwin downloads them from Microsoft).
#
# Prints one line per target, e.g.
#   target aarch64-apple-darwin: check ok | build ok (41.2 MiB) | symbol ok
#   target x86_64-pc-windows-msvc: check ok | build not run (no MSVC linker here)
# and exits non-zero if any step failed. Output of the cross builds goes to target/cross, apart from the main
# debug build in target/. Logs: target/cross/logs/<target>.<step>.log.
#
# Cross builds carry no debug info and no incremental cache (they only prove that the crate compiles, links and
# exports its entry point). With --prune, each target's build directory (target/cross/<target>) is removed once
# its line is printed: what `npm test` uses, so the check of seven targets never holds seven builds on disk.
#
# Usage: scripts/targets.sh [--check-only] [--prune] [TARGET...]   (default: all targets)
# Installs what is missing, quietly: rustup targets, ziglang (PyPI), cargo-zigbuild (crates.io), llvm (apt).
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
CROSS_DIR=target/cross
LOG_DIR=$CROSS_DIR/logs
NODE_DIR=$CROSS_DIR/node
WINDOWS=x86_64-pc-windows-msvc

CHECK_ONLY=0
PRUNE=0
TARGETS=()
for a in "$@"; do
  case "$a" in
    --check-only) CHECK_ONLY=1 ;;
    --prune) PRUNE=1 ;;
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) TARGETS+=("$a") ;;
  esac
done
if ((${#TARGETS[@]} == 0)); then
  mapfile -t TARGETS < <(node -p 'require("./package.json").napi.targets.join("\n")')
  TARGETS+=("$WINDOWS")
fi

export CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0

log() { printf '%s\n' "$*" >&2; }
trap 'log "targets.sh: line $LINENO: \"$BASH_COMMAND\" failed"' ERR

if ((!CHECK_ONLY)) && [[ ! -x node_modules/.bin/napi ]]; then
  log "node_modules/.bin/napi is missing: run npm ci first"
  exit 2
fi

# ---- tools (idempotent) -------------------------------------------------------------------------------------
install_tools() {
  local installed missing=() t
  installed=$(rustup target list --installed)
  for t in "${TARGETS[@]}"; do
    grep -qx "$t" <<<"$installed" || missing+=("$t")
  done
  if ((${#missing[@]})); then
    log "installing rust targets: ${missing[*]}"
    rustup target add "${missing[@]}" >/dev/null 2>&1 || rustup target add "${missing[@]}"
  fi
  ((CHECK_ONLY)) && [[ "${TARGETS[*]}" == "$WINDOWS" ]] && return 0
  if ! python3 -m ziglang version >/dev/null 2>&1; then
    log "installing ziglang $ZIGLANG_VERSION (PyPI)"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "ziglang==$ZIGLANG_VERSION"
  fi
  if ! command -v cargo-zigbuild >/dev/null 2>&1; then
    log "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION (crates.io)"
    cargo install -q --locked cargo-zigbuild --version "$CARGO_ZIGBUILD_VERSION"
  fi
  if ((!CHECK_ONLY)) && ! command -v llvm-nm >/dev/null 2>&1; then
    log "installing llvm (apt) for llvm-nm"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq llvm >/dev/null 2>&1; then
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq llvm >/dev/null
    fi
  fi
  # napi's --cross-compile runs cargo-zigbuild, which wants `zig`: the PyPI package's, through a shim.
  if ! command -v zig >/dev/null 2>&1; then
    mkdir -p "$CROSS_DIR/bin"
    printf '#!/bin/sh\nexec python3 -m ziglang "$@"\n' >"$CROSS_DIR/bin/zig"
    chmod +x "$CROSS_DIR/bin/zig"
    PATH="$PWD/$CROSS_DIR/bin:$PATH"
  fi
}

# ---- steps --------------------------------------------------------------------------------------------------
# The napi package suffix of a target: sandboxd.<suffix>.node.
node_suffix() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo linux-x64-gnu ;;
    aarch64-unknown-linux-gnu) echo linux-arm64-gnu ;;
    x86_64-unknown-linux-musl) echo linux-x64-musl ;;
    aarch64-unknown-linux-musl) echo linux-arm64-musl ;;
    x86_64-apple-darwin) echo darwin-x64 ;;
    aarch64-apple-darwin) echo darwin-arm64 ;;
    *) return 1 ;;
  esac
}

# The first error line of a log, for the summary.
first_error() {
  local line
  line=$(grep -m1 -E '^(error|ERROR)' "$1" 2>/dev/null || true)
  [[ -n "$line" ]] || line=$(grep -v '^\s*$' "$1" 2>/dev/null | tail -n1 || true)
  [[ -n "$line" ]] || line="(empty log $1)"
  printf '%s' "${line:0:200}"
}

check_target() { # TARGET LOG
  if [[ "$1" == "$WINDOWS" ]]; then
    # No C is compiled for Windows (ring, LocalSandboxd's only C dependency, is Unix-only), so plain cargo.
    cargo clippy --lib --target "$1" --target-dir "$CROSS_DIR" -- -D warnings >"$2" 2>&1
  else
    # zig is the C compiler for ring's build script.
    cargo-zigbuild clippy --lib --target "$1" --target-dir "$CROSS_DIR" -- -D warnings >"$2" 2>&1
  fi
}

build_target() { # TARGET LOG -> the .node path on stdout
  local suffix
  suffix=$(node_suffix "$1")
  node_modules/.bin/napi build --platform --cross-compile --target "$1" --target-dir "$CROSS_DIR" \
    --output-dir "$NODE_DIR" --no-js --dts "$1.d.ts" >"$2" 2>&1 || return 1
  rm -f "$NODE_DIR/$1.d.ts"
  [[ -s "$NODE_DIR/sandboxd.$suffix.node" ]] || { echo "no $NODE_DIR/sandboxd.$suffix.node" >>"$2"; return 1; }
  echo "$NODE_DIR/sandboxd.$suffix.node"
}

# The object format and architecture llvm-objdump reads, e.g. "mach-o arm64" or "elf64-x86-64". (llvm-objdump
# 14 names x86-64 Mach-O files and then exits 1 on them: the name is all that is used.)
file_format() {
  local out
  out=$(llvm-objdump -f "$1" 2>/dev/null) || true
  awk '/file format/ { sub(/.*file format /, ""); print; exit }' <<<"$out"
}

symbol_ok() { # NODE_FILE LOG
  # What Node's dlopen sees: the dynamic symbol table (ELF; a build without debug info has no static one left),
  # else the external symbols (Mach-O has one table). Mach-O prefixes C symbols with an underscore.
  { llvm-nm -D --defined-only "$1" 2>&1; llvm-nm --defined-only --extern-only "$1" 2>&1; } >"$2" || true
  grep -Eq ' T _?napi_register_module_v1$' "$2"
}

size_of() {
  local b
  b=$(stat -c %s "$1")
  awk -v b="$b" 'BEGIN { printf "%.1f MiB", b / 1048576 }'
}

# ---- main ---------------------------------------------------------------------------------------------------
mkdir -p "$LOG_DIR" "$NODE_DIR"
install_tools

FAILED=0
for t in "${TARGETS[@]}"; do
  t0=$SECONDS
  line="target $t:"
  if ! check_target "$t" "$LOG_DIR/$t.check.log"; then
    line+=" FAILED (check: $(first_error "$LOG_DIR/$t.check.log"))"
    FAILED=1
  else
    line+=" check ok"
    if [[ "$t" == "$WINDOWS" ]]; then
      line+=" | build not run (no MSVC linker or Windows SDK here)"
    elif ((CHECK_ONLY)); then
      line+=" | build not run (--check-only)"
    elif ! node=$(build_target "$t" "$LOG_DIR/$t.build.log"); then
      line+=" | FAILED (build: $(first_error "$LOG_DIR/$t.build.log"))"
      FAILED=1
    else
      line+=" | build ok ($(size_of "$node"))"
      if symbol_ok "$node" "$LOG_DIR/$t.nm.log"; then
        line+=" | symbol ok ($(file_format "$node"))"
      else
        line+=" | FAILED (symbol: napi_register_module_v1 not exported by $node)"
        FAILED=1
      fi
    fi
  fi
  line+="  [$((SECONDS - t0))s]"
  echo "$line"
  if ((PRUNE)); then rm -rf "${CROSS_DIR:?}/$t"; fi
done
exit "$FAILED"
