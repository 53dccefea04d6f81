# shellcheck shell=bash
# Helpers for scripts/test.sh (and for anyone who wants a throw-away Docker
# engine by hand):
#
#   source scripts/lib.sh
#   ensure_packages            # docker.io + busybox-static via apt-get when missing
#   ensure_node_modules        # npm ci when node_modules is missing or stale
#   start_private_dockerd      # (optional DIR) -> exports DOCKER_HOST
#   build_test_images          # -> exports SANDBOXD_TEST_IMAGE / SANDBOXD_TEST_ROOTFS,
#                              #    SANDBOXD_NOSHELL_IMAGE (no /bin/sh) and
#                              #    SANDBOXD_AGENT_IMAGE (sandbox-agent image),
#                              #    SANDBOXD_CURL_IMAGE (busybox + a verifying TLS client)
#   stop_private_dockerd       # idempotent, safe in an EXIT trap
#
# Everything here assumes root on Debian (CI runs as root on a fresh machine).

SBX_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SBX_LIB="${SBX_REPO}/scripts/lib.sh"

SBX_TEST_IMAGE="sandboxd-test/busybox:latest"
SBX_TEST_ROOTFS="${SBX_REPO}/.tmp/busybox-rootfs.tar"

# State of the private dockerd started by start_private_dockerd.
SBX_DOCKERD_DIR=""
SBX_DOCKERD_PID=""

sbx_log() { printf '%s\n' "$*" >&2; }
sbx_err() { printf 'ERROR: %s\n' "$*" >&2; }

# dockerd lives in /usr/sbin, which a non-login root shell may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;; esac

# ---------------------------------------------------------------------------
# packages
# ---------------------------------------------------------------------------

SBX_APT_UPDATED=""
_sbx_apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z "$SBX_APT_UPDATED" ]]; then
    sbx_log "apt-get update"
    apt-get update -qq
    SBX_APT_UPDATED=1
  fi
  sbx_log "apt-get install -y $*"
  apt-get install -y -qq --no-install-recommends "$@"
}

# Path of the busybox binary to put in the test image ("" when none).
sbx_busybox_path() {
  if [[ -x /bin/busybox ]]; then
    echo /bin/busybox
  else
    command -v busybox || true
  fi
}

# True unless we can tell the binary is dynamically linked (the image has no libc).
_sbx_is_static() {
  local f=$1 out
  if command -v file >/dev/null 2>&1; then
    out=$(file -L "$f" 2>/dev/null) || return 0
    [[ $out != *"dynamically linked"* ]]
  elif command -v readelf >/dev/null 2>&1; then
    ! readelf -l "$f" 2>/dev/null | grep -q 'Requesting program interpreter'
  else
    return 0
  fi
}

ensure_packages() {
  local pkgs=() bb
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    pkgs+=(docker.io)
  fi
  bb=$(sbx_busybox_path)
  if [[ -z "$bb" ]] || ! _sbx_is_static "$bb"; then
    pkgs+=(busybox-static)
  fi
  # The network policy tests and the demo: curl (copied into a test image), openssl (a test CA), ip (loopback
  # addresses of the fake internet).
  command -v curl >/dev/null 2>&1 || pkgs+=(curl)
  command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
  command -v ip >/dev/null 2>&1 || pkgs+=(iproute2)
  if ((${#pkgs[@]})); then
    _sbx_apt_install "${pkgs[@]}"
  fi
  command -v dockerd >/dev/null || { sbx_err "dockerd still missing after install"; return 1; }
  command -v docker >/dev/null || { sbx_err "docker CLI still missing after install"; return 1; }
  [[ -n "$(sbx_busybox_path)" ]] || { sbx_err "busybox still missing after install"; return 1; }
}

ensure_node_modules() {
  (
    cd "$SBX_REPO" || exit 1
    # npm writes node_modules/.package-lock.json on every install; compare that.
    if [[ ! -d node_modules || ! -f node_modules/.package-lock.json ||
      package-lock.json -nt node_modules/.package-lock.json ]]; then
      sbx_log "npm ci"
      # npm 11 can write a lock file that omits other platforms' optional packages and then refuses
      # `npm ci` on it; `npm install` honours the same lock and fills the gap.
      npm ci --no-audit --no-fund || {
        sbx_log "npm ci refused the lock file; falling back to npm install"
        npm install --no-audit --no-fund
      }
    fi
  )
}

# ---------------------------------------------------------------------------
# private dockerd
# ---------------------------------------------------------------------------

# PIDs (from /proc) whose command line mentions DIR/ — containerd and its shims
# started for *our* private engine. DIR is a fresh mktemp dir, so this cannot
# match anybody else's processes.
_sbx_pids_mentioning() {
  local dir=$1 p cmd
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $p == "$$" || $p == "$BASHPID" ]] && continue
    cmd=$( { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || continue
    [[ $cmd == *"$dir/"* ]] && echo "$p"
  done
  return 0
}

_sbx_pid_is_ours() { # PID DIR: alive and still a process of our engine
  local cmd
  [[ -n "$1" && -r /proc/$1/cmdline ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$2"* ]]
}

# Start time (clock ticks since boot, /proc/PID/stat field 22) of PID: with
# the PID it names one process for good, whatever PIDs get reused later.
_sbx_starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) } # drop "pid (comm) "; comm may contain spaces
  # shellcheck disable=SC2086
  set -- $stat
  echo "${20}"
}

# Direct children of PID (from /proc; no procps needed).
_sbx_children() {
  local f stat
  for f in /proc/[0-9]*/stat; do
    stat=$(cat "$f" 2>/dev/null) || continue
    stat=${stat##*) } # "state ppid ..."
    stat=${stat#* }
    [[ ${stat%% *} == "$1" ]] && { f=${f#/proc/}; echo "${f%/stat}"; }
  done
  return 0
}

# PID exists and is not a zombie (reparented zombies may wait long for reaping).
_sbx_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

_sbx_docker() { docker --host "unix://${SBX_DOCKERD_DIR}/docker.sock" "$@"; }

# start_private_dockerd [DIR]
start_private_dockerd() {
  local dir=${1:-}
  if [[ -n "$SBX_DOCKERD_PID" ]]; then
    sbx_err "a private dockerd (pid $SBX_DOCKERD_PID) is already running in $SBX_DOCKERD_DIR"
    return 1
  fi
  if [[ -z "$dir" ]]; then
    dir=$(mktemp -d /tmp/sbxci.XXXXXX)
  else
    mkdir -p "$dir"
  fi
  if ((${#dir} > 60)); then
    sbx_err "dockerd dir '$dir' is too long for a unix socket path"
    return 1
  fi
  SBX_DOCKERD_DIR=$dir
  echo '{}' >"$dir/daemon.json"
  # dockerd uses a system containerd whenever this socket file exists, and
  # starts (and stops) its own under DIR/exec/containerd otherwise.
  if [[ -e /run/containerd/containerd.sock ]]; then
    sbx_log "note: /run/containerd/containerd.sock exists; this dockerd will share that containerd"
  fi

  dockerd \
    --host "unix://$dir/docker.sock" \
    --data-root "$dir/data" \
    --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" \
    --iptables=false \
    --bridge=none \
    --storage-driver=vfs \
    --config-file "$dir/daemon.json" \
    </dev/null >"$dir/dockerd.log" 2>&1 &
  SBX_DOCKERD_PID=$!
  sbx_log "dockerd pid $SBX_DOCKERD_PID, dir $dir"

  local i
  for ((i = 0; i < 60; i++)); do
    if ! _sbx_alive "$SBX_DOCKERD_PID"; then
      sbx_log "---- dockerd exited early; tail of $dir/dockerd.log ----"
      tail -n 40 "$dir/dockerd.log" >&2 || true
      SBX_DOCKERD_PID=""
      stop_private_dockerd
      sbx_err "private dockerd failed to start"
      return 1
    fi
    if _sbx_docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
      export DOCKER_HOST="unix://$dir/docker.sock"
      sbx_log "dockerd $(_sbx_docker version --format '{{.Server.Version}}' 2>/dev/null) ready after $((i / 2))s at $DOCKER_HOST"
      return 0
    fi
    sleep 0.5
  done
  sbx_log "---- dockerd not ready after 30s; tail of $dir/dockerd.log ----"
  tail -n 40 "$dir/dockerd.log" >&2 || true
  stop_private_dockerd
  sbx_err "private dockerd did not come up within 30s"
  return 1
}

# Safe to call more than once and from an EXIT trap. Never touches processes
# other than our dockerd and the processes whose command line names our dir.
stop_private_dockerd() {
  local dir=$SBX_DOCKERD_DIR pid=$SBX_DOCKERD_PID
  [[ -n "$dir" ]] || return 0
  SBX_DOCKERD_DIR=""
  SBX_DOCKERD_PID=""
  local - # option changes below are undone on return
  set +e +o pipefail # best effort from here on, whatever the caller's options

  local children=() i p
  if [[ -n "$pid" ]] && _sbx_pid_is_ours "$pid" "$dir"; then
    # Kill leftover containers first so dockerd's shutdown does not wait
    # their stop timeouts (sh as PID 1 ignores SIGTERM).
    local ids
    ids=$(timeout 10 docker --host "unix://$dir/docker.sock" ps -q 2>/dev/null)
    if [[ -n "$ids" ]]; then
      # shellcheck disable=SC2086
      timeout 15 docker --host "unix://$dir/docker.sock" kill $ids >/dev/null 2>&1
    fi
    # dockerd's children (its containerd), as PID:STARTTIME
    for p in $(_sbx_children "$pid"); do
      children+=("$p:$(_sbx_starttime "$p")")
    done
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 40; i++)); do
      _sbx_alive "$pid" || break
      sleep 0.5
    done
    if _sbx_alive "$pid"; then
      sbx_log "dockerd $pid still alive after 20s, SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  # reap it if it is our child (no-op otherwise)
  [[ -n "$pid" ]] && wait "$pid" 2>/dev/null

  # containerd (dockerd's child) and any shims still around
  local c stragglers=()
  for c in "${children[@]}"; do
    [[ "$(_sbx_starttime "${c%%:*}")" == "${c#*:}" ]] && stragglers+=("${c%%:*}")
  done
  mapfile -t -O "${#stragglers[@]}" stragglers < <(_sbx_pids_mentioning "$dir")
  if ((${#stragglers[@]})); then
    sbx_log "terminating leftover engine processes: ${stragglers[*]}"
    kill -TERM "${stragglers[@]}" 2>/dev/null
    for ((i = 0; i < 20; i++)); do
      local alive=0
      for p in "${stragglers[@]}"; do _sbx_alive "$p" && alive=1; done
      ((alive)) || break
      sleep 0.5
    done
    kill -KILL "${stragglers[@]}" 2>/dev/null
  fi

  # anything still mounted under dir, deepest first
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null || sbx_log "umount -l $m failed"
  done < <(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r)

  rm -rf "$dir" 2>/dev/null || sbx_log "could not remove $dir"
  sbx_log "private dockerd stopped, $dir removed"
  return 0
}

# ---------------------------------------------------------------------------
# test images
# ---------------------------------------------------------------------------

# Build $SBX_TEST_ROOTFS: a static-busybox root filesystem.
_sbx_build_busybox_rootfs() {
  local out=$1 bb stage applet
  bb=$(sbx_busybox_path)
  [[ -n "$bb" ]] || { sbx_err "no busybox binary (run ensure_packages)"; return 1; }
  mkdir -p "$(dirname "$out")"
  stage=$(mktemp -d "$(dirname "$out")/rootfs.XXXXXX") || return 1
  # (errexit would be ignored here when the caller uses `||`, so check each step)
  (
    cd "$stage" && chmod 755 . || exit 1
    mkdir -p bin tmp usr/bin etc root proc sys dev home/app || exit 1
    chmod 1777 tmp && chmod 700 root || exit 1
    cp "$bb" bin/busybox && chmod 755 bin/busybox || exit 1
    # One symlink per applet; never busybox -> busybox (it would replace the binary).
    "$bb" --list >"$stage.applets" || exit 1
    while read -r applet; do
      [[ -z "$applet" || "$applet" == busybox || "$applet" == */* ]] && continue
      ln -s busybox "bin/$applet" || exit 1
    done <"$stage.applets"
    ln -s /bin/busybox usr/bin/env || exit 1
    cat >etc/passwd <<'EOF2'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
EOF2
    cat >etc/group <<'EOF2'
root:x:0:
nogroup:x:65534:
app:x:1000:
EOF2
    chown -R 0:0 . && chown 1000:1000 home/app || exit 1
    tar --numeric-owner --sort=name --mtime='@0' -cf "$out.partial" . || exit 1
    mv -f "$out.partial" "$out"
  )
  local rc=$?
  rm -rf "$stage" "$stage.applets" "$out.partial"
  return $rc
}

_sbx_image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

build_test_images() {
  [[ -n "${DOCKER_HOST:-}" ]] || { sbx_err "build_test_images: DOCKER_HOST is not set"; return 1; }
  local rootfs=$SBX_TEST_ROOTFS image=$SBX_TEST_IMAGE rebuilt=0

  # (a) busybox rootfs tarball: rebuilt when missing or older than this script.
  if [[ ! -s "$rootfs" || ! "$rootfs" -nt "$SBX_LIB" ]]; then
    sbx_log "building $rootfs"
    _sbx_build_busybox_rootfs "$rootfs" || return 1
    rebuilt=1
  fi
  # (b) image from the tarball: imported when missing from this engine or stale.
  if ((rebuilt)) || ! _sbx_image_exists "$image"; then
    sbx_log "importing $image"
    docker import --change 'CMD ["sh"]' "$rootfs" "$image" >/dev/null || return 1
  fi
  export SANDBOXD_TEST_IMAGE=$image
  export SANDBOXD_TEST_ROOTFS=$rootfs

  build_extra_test_images
}

# >>> FURTHER TEST IMAGES GO HERE >>>
# The sandbox-agent image (and any other image the tests need) is built here,
# on the engine at $DOCKER_HOST, exporting its name as SANDBOXD_TEST_<WHAT>.
# Follow the pattern above: skip when the image exists and its inputs are older
# than its build output.
build_extra_test_images() {
  build_noshell_image || return 1
  build_curl_image || return 1
  build_sandbox_agent_image
}

# make_test_pki DIR NAME...: a test CA (DIR/ca.pem) and a server certificate it
# signed for every NAME (DNS names, or IP:a.b.c.d) in DIR/cert.pem + DIR/key.pem,
# and a self-signed certificate for the same names that no CA vouches for
# (DIR/self.pem + DIR/self.key). P-256 keys, valid two days. For the network
# policy tests and the demo's "fake internet" (HTTPS servers on loopback).
make_test_pki() {
  local dir=$1 san="" n
  shift
  for n in "$@"; do
    case $n in IP:*) san+="${san:+,}$n" ;; *) san+="${san:+,}DNS:$n" ;; esac
  done
  mkdir -p "$dir" || return 1
  local ssl=(openssl)
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  {
    "${ssl[@]}" req -x509 "${ec[@]}" -days 2 -subj '/CN=sandboxd fake internet CA' \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" &&
      "${ssl[@]}" req "${ec[@]}" -subj '/CN=fake internet' -keyout "$dir/key.pem" -out "$dir/srv.csr" &&
      printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" >"$dir/ext" &&
      "${ssl[@]}" x509 -req -in "$dir/srv.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 2 -extfile "$dir/ext" -out "$dir/cert.pem" &&
      "${ssl[@]}" req -x509 "${ec[@]}" -days 2 -subj '/CN=nobody vouches' -addext "subjectAltName=$san" \
        -keyout "$dir/self.key" -out "$dir/self.pem"
  } >/dev/null 2>&1 || { sbx_err "make_test_pki: openssl failed"; return 1; }
  rm -f "$dir/srv.csr" "$dir/ext" "$dir/ca.srl" "$dir/ca.key"
}

# sandboxd-test/curl:latest: $SBX_TEST_IMAGE plus this machine's curl and the
# shared libraries it loads (copied at their paths, with the dynamic loader),
# and an empty /etc/ssl/certs/ca-certificates.crt that LocalSandboxd extends
# with the sandbox's proxy CA: a TLS client that verifies certificates, for the
# network policy tests (busybox's wget does not verify). SANDBOXD_CURL_IMAGE.
SBX_CURL_IMAGE="sandboxd-test/curl:latest"
SBX_CURL_ROOTFS="${SBX_REPO}/.tmp/curl-layer.tar"

build_curl_image() {
  local image=$SBX_CURL_IMAGE rootfs=$SBX_CURL_ROOTFS curl dir f
  curl=$(command -v curl) || { _sbx_apt_install curl ca-certificates && curl=$(command -v curl); } || return 1
  if [[ ! -s "$rootfs" || ! "$rootfs" -nt "$SBX_LIB" || "$curl" -nt "$rootfs" ]] || ! _sbx_image_exists "$image"; then
    sbx_log "building $image from $curl"
    dir=$(mktemp -d) || return 1
    tar -xf "$SBX_TEST_ROOTFS" -C "$dir" || { rm -rf "$dir"; return 1; }
    mkdir -p "$dir/usr/bin" "$dir/etc/ssl/certs"
    cp -L "$curl" "$dir/usr/bin/curl"
    : > "$dir/etc/ssl/certs/ca-certificates.crt"
    # Every library ldd names (and the loader), at the same path.
    for f in $(ldd "$curl" | grep -o '/[^ ]*' | sort -u); do
      mkdir -p "$dir$(dirname "$f")"
      cp -L "$f" "$dir$f"
    done
    tar -C "$dir" -cf "$rootfs" . || { rm -rf "$dir"; return 1; }
    rm -rf "$dir"
    docker import --change 'CMD ["sh"]' "$rootfs" "$image" >/dev/null || return 1
  fi
  export SANDBOXD_CURL_IMAGE=$image
}

# sandboxd-test/noshell:latest: a distroless-like image with no shell at all. The
# static busybox is /bin/busybox, with links for a few applets that are not
# shells; there is no /bin/sh (nor ash/hush/sh anywhere), so the SDK must run
# argv directly there.
SBX_NOSHELL_IMAGE="sandboxd-test/noshell:latest"
SBX_NOSHELL_ROOTFS="${SBX_REPO}/.tmp/noshell-rootfs.tar"
SBX_NOSHELL_APPLETS="cat echo env false head ls printf sleep true wc yes"

_sbx_build_noshell_rootfs() {
  local out=$1 bb stage applet
  bb=$(sbx_busybox_path)
  [[ -n "$bb" ]] || { sbx_err "no busybox binary (run ensure_packages)"; return 1; }
  mkdir -p "$(dirname "$out")"
  stage=$(mktemp -d "$(dirname "$out")/noshell.XXXXXX") || return 1
  (
    cd "$stage" && chmod 755 . || exit 1
    mkdir -p bin tmp etc proc sys dev && chmod 1777 tmp || exit 1
    cp "$bb" bin/busybox && chmod 755 bin/busybox || exit 1
    for applet in $SBX_NOSHELL_APPLETS; do
      ln -s busybox "bin/$applet" || exit 1
    done
    printf 'root:x:0:0:root:/:/bin/false\n' >etc/passwd && printf 'root:x:0:\n' >etc/group || exit 1
    [[ ! -e bin/sh && ! -e bin/ash && ! -e bin/hush ]] || exit 1
    chown -R 0:0 . || exit 1
    tar --numeric-owner --sort=name --mtime='@0' -cf "$out.partial" . || exit 1
    mv -f "$out.partial" "$out"
  )
  local rc=$?
  rm -rf "$stage" "$out.partial"
  return $rc
}

build_noshell_image() {
  local rootfs=$SBX_NOSHELL_ROOTFS image=$SBX_NOSHELL_IMAGE rebuilt=0
  if [[ ! -s "$rootfs" || ! "$rootfs" -nt "$SBX_LIB" ]]; then
    sbx_log "building $rootfs"
    _sbx_build_noshell_rootfs "$rootfs" || return 1
    rebuilt=1
  fi
  if ((rebuilt)) || ! _sbx_image_exists "$image"; then
    sbx_log "importing $image"
    docker import --change 'CMD ["/bin/sleep", "100000"]' --change 'ENV PATH=/bin' "$rootfs" "$image" >/dev/null || return 1
  fi
  export SANDBOXD_NOSHELL_IMAGE=$image
}

# sandboxd-test/agent:latest: the real sandbox-agent 0.4.2 (npm devDependency
# @sandbox-agent/cli-linux-x64) on $SBX_CURL_IMAGE (busybox + curl, so the demo
# can show verified HTTPS through the proxy), with the mock agent and the
# scripted ACP agent installed; see __test__/fixtures/agent-image/README.md.
SBX_AGENT_IMAGE="sandboxd-test/agent:latest"
SBX_AGENT_FIXTURE="${SBX_REPO}/__test__/fixtures/agent-image"
SBX_AGENT_BIN="${SBX_REPO}/node_modules/@sandbox-agent/cli-linux-x64/bin/sandbox-agent"
SBX_AGENT_LABEL="sandboxd.test.inputs"

# Hash of everything the image is built from: Dockerfile, agent script,
# sandbox-agent binary and the ID of the base image.
_sbx_agent_image_inputs() {
  local base_id
  base_id=$(docker image inspect --format '{{.Id}}' "$SBX_CURL_IMAGE") || return 1
  {
    sha256sum "$SBX_AGENT_FIXTURE/Dockerfile" "$SBX_AGENT_FIXTURE/scripted-acp-agent.sh" "$SBX_AGENT_BIN" |
      awk '{ print $1 }'
    echo "$base_id"
  } | sha256sum | awk '{ print $1 }'
}

build_sandbox_agent_image() {
  local image=$SBX_AGENT_IMAGE inputs have ctx rc=0
  if [[ ! -x "$SBX_AGENT_BIN" ]]; then
    if [[ "$(uname -m)" != x86_64 ]]; then
      # the npm package ships a linux-x64 binary only
      sbx_log "note: no sandbox-agent binary for $(uname -m); $image not built, SANDBOXD_AGENT_IMAGE unset"
      unset SANDBOXD_AGENT_IMAGE
      return 0
    fi
    sbx_err "$SBX_AGENT_BIN missing: run npm ci (devDependency @sandbox-agent/cli-linux-x64)"
    return 1
  fi
  inputs=$(_sbx_agent_image_inputs) || return 1
  have=$(docker image inspect --format "{{ index .Config.Labels \"$SBX_AGENT_LABEL\" }}" "$image" 2>/dev/null || true)
  if [[ "$have" != "$inputs" ]]; then
    local old_id
    old_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    sbx_log "building $image (inputs ${inputs:0:12})"
    mkdir -p "${SBX_REPO}/.tmp" && ctx=$(mktemp -d "${SBX_REPO}/.tmp/agent-image.XXXXXX") || return 1
    # hard links when possible: the binary is 24 MB
    cp -l "$SBX_AGENT_BIN" "$ctx/sandbox-agent" 2>/dev/null || cp "$SBX_AGENT_BIN" "$ctx/sandbox-agent" || rc=1
    cp "$SBX_AGENT_FIXTURE/Dockerfile" "$SBX_AGENT_FIXTURE/scripted-acp-agent.sh" "$ctx/" || rc=1
    if ((rc == 0)); then
      DOCKER_BUILDKIT=0 docker build --force-rm \
        --build-arg "BASE_IMAGE=$SBX_CURL_IMAGE" \
        --label "$SBX_AGENT_LABEL=$inputs" \
        --tag "$image" "$ctx" >"$ctx.log" 2>&1 || rc=1
      ((rc == 0)) || tail -n 30 "$ctx.log" >&2
    fi
    rm -rf "$ctx" "$ctx.log"
    ((rc == 0)) || { sbx_err "docker build of $image failed"; return 1; }
    # drop the stale image unless a container still uses it
    if [[ -n "$old_id" ]]; then
      docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
  fi
  export SANDBOXD_AGENT_IMAGE=$image
}
# <<< FURTHER TEST IMAGES GO HERE <<<
