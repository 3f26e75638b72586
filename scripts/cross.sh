#!/usr/bin/env bash
# Cross-builds release binaries for ARM gateway boxes and smoke-tests them under qemu-user.
#
# Usage: scripts/cross.sh [aarch64|armv7|all] [--no-install] [--no-build] [--no-test] [--mem]
#   aarch64      aarch64-unknown-linux-gnu (the default)
#   armv7        armv7-unknown-linux-gnueabihf (32-bit ARM, hard float)
#   all          both
#   --no-install never apt-get/rustup anything: fail if a tool is missing
#   --no-build   use the binaries already in target/<triple>/release
#   --no-test    build only (no qemu smoke test)
#   --mem        also measure the agent's idle and peak memory (VmRSS/VmHWM from /proc) in
#                `run` with a simulated camera and a local, then an S3 (s3-test-server)
#                destination: the native x86_64 release binary and each ARM one under qemu
# Environment (defaults in brackets):
#   MEM_CLIPS [24]  MEM_SIZE [33554432]: clips on the camera for --mem (about 40% are events)
#   CROSS_TMP [$TMPDIR or /tmp]: where work directories are made
#
# Tools (installed when missing, as root with apt-get, unless --no-install):
#   apt-get install -y gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross \
#       libc6-dev-armhf-cross qemu-user-static time
#   rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
# The linker and the C compiler (ring and SQLite are C) are set per target in
# the environment only: .cargo/config is not touched, native builds are unaffected.
# Exit codes: 0 ok, 1 a build or smoke test failed, 2 usage, 3 tools missing and not installable.
set -euo pipefail
shopt -s inherit_errexit

WHICH=aarch64
INSTALL=1
BUILD=1
TEST=1
MEM=0
while [ $# -gt 0 ]; do
    case "$1" in
        aarch64 | armv7 | all) WHICH=$1 ;;
        --no-install) INSTALL=0 ;;
        --no-build) BUILD=0 ;;
        --no-test) TEST=0 ;;
        --mem) MEM=1 ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "cross.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
MEM_CLIPS=${MEM_CLIPS:-24}
MEM_SIZE=${MEM_SIZE:-33554432}

cd "$(dirname "$0")/.."
ROOT=$(pwd)

case "$WHICH" in
    all) ARCHES=(aarch64 armv7) ;;
    *) ARCHES=("$WHICH") ;;
esac

# arch -> triple, gcc prefix (also the sysroot under /usr), qemu name, Debian packages
triple() { case "$1" in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; esac; }
gnu() { case "$1" in aarch64) echo aarch64-linux-gnu ;; armv7) echo arm-linux-gnueabihf ;; esac; }
qemu_name() { case "$1" in aarch64) echo aarch64 ;; armv7) echo arm ;; esac; }
debs() { case "$1" in aarch64) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;; armv7) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross ;; esac; }

# The qemu-user binary for $1 (static build preferred), or nothing.
find_qemu() {
    local q
    q=$(qemu_name "$1")
    command -v "qemu-$q-static" || command -v "qemu-$q" || true
}

# ---- tools ----------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    if [ "$INSTALL" != 1 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        return 1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        echo "== apt-get update" >&2
        apt-get update -qq >&2 || return 1
        APT_UPDATED=1
    fi
    echo "== apt-get install -y $*" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

missing=()
for a in "${ARCHES[@]}"; do
    g=$(gnu "$a")
    if [ "$BUILD" = 1 ] && { ! command -v "$g-gcc" >/dev/null || [ ! -d "/usr/$g/include" ]; }; then
        read -ra d <<<"$(debs "$a")"
        missing+=("${d[@]}")
    fi
done
if [ ${#missing[@]} -gt 0 ] && ! apt_install "${missing[@]}"; then
    echo "cross.sh: missing cross compilers: ${missing[*]}" >&2
    echo "  install them:  apt-get install -y ${missing[*]}   (or run this script as root)" >&2
    exit 3
fi
if [ "$TEST" = 1 ] || [ "$MEM" = 1 ]; then
    for a in "${ARCHES[@]}"; do
        if [ -z "$(find_qemu "$a")" ]; then
            # Debian 12 has qemu-user-static; later releases may only have qemu-user.
            apt_install qemu-user-static || apt_install qemu-user || true
            break
        fi
    done
    for a in "${ARCHES[@]}"; do
        if [ -z "$(find_qemu "$a")" ]; then
            echo "cross.sh: no qemu-$(qemu_name "$a")(-static): apt-get install -y qemu-user-static (or qemu-user)" >&2
            exit 3
        fi
    done
fi
if [ "$MEM" = 1 ] || [ "$TEST" = 1 ]; then
    [ -x /usr/bin/time ] || apt_install time || true
fi
if [ "$BUILD" = 1 ]; then
    for a in "${ARCHES[@]}"; do
        t=$(triple "$a")
        if ! rustup target list --installed 2>/dev/null | grep -qx "$t"; then
            if [ "$INSTALL" = 1 ] && command -v rustup >/dev/null; then
                rustup target add "$t" >&2 || { echo "cross.sh: rustup target add $t failed" >&2; exit 3; }
            else
                echo "cross.sh: the Rust standard library for $t is missing: rustup target add $t" >&2
                exit 3
            fi
        fi
    done
fi

# ---- per target -----------------------------------------------------------------------------
# Sets the linker and the C toolchain for target $1 (cc-rs reads CC_<triple> etc.).
set_env() {
    local t g u
    t=$(triple "$1")
    g=$(gnu "$1")
    u=$(echo "$t" | tr 'a-z-' 'A-Z_')
    export "CARGO_TARGET_${u}_LINKER=$g-gcc"
    export "CC_${t//-/_}=$g-gcc" "CXX_${t//-/_}=$g-g++" "AR_${t//-/_}=$g-ar"
    # qemu-user for `cargo run`/`cargo test --target` too.
    export "CARGO_TARGET_${u}_RUNNER=$(find_qemu "$1") -L /usr/$g"
}

WORK=$(mktemp -d "${CROSS_TMP:-${TMPDIR:-/tmp}}/qucam-cross.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mib() { awk "BEGIN{printf \"%.1f\", $1/1048576}"; }

# Waits for "serving on http://ADDR" in log $1 of process $2; prints the URL.
wait_url() {
    local i
    for i in $(seq 1 600); do
        if grep -q 'serving on http://' "$1" 2>/dev/null; then
            grep -o 'http://[0-9.:]*' "$1" | head -1
            return 0
        fi
        kill -0 "$2" 2>/dev/null || { echo "cross.sh: server died:" >&2; cat "$1" >&2; return 1; }
        sleep 0.2
    done
    echo "cross.sh: server did not start: $1" >&2
    return 1
}

# --mem: the agent's memory in `run` (call it as `measure_mem ... >FILE`, not in a subshell,
# so that PIDS reaches cleanup; errexit does not apply inside `if`, hence the explicit
# returns). $1 = label, $2 = bin dir, $3 = destination (local | s3), rest = runner (qemu).
# Phases: an empty camera (idle), then MEM_CLIPS clips appear and every event clip is
# offloaded and deleted from the camera, then idle again. VmRSS and VmHWM come from
# /proc/PID/status (under qemu-user they include qemu itself). Prints one line:
# "label: agent idle X MiB, peak Y MiB, idle after Z MiB (N event clips of S bytes in T s)".
measure_mem() {
    local label=$1 bin=$2 dest=$3
    shift 3
    local runner=("$@")
    local w="$WORK/mem-${label//[^a-z0-9_]/}-$dest" sim_pid s3_pid agent_pid url s3_url i events idle0 idle1 peak t0 t1 left
    mkdir -p "$w/stage" "$w/camera" "$w/dest"
    # Clips made by the simulator itself (deterministic), served later from the camera dir.
    RUST_LOG=warn "$NATIVE/qucam-sim" --listen 127.0.0.1:0 --dir "$w/stage" \
        --generate "$MEM_CLIPS" --size "$MEM_SIZE" >"$w/gen.log" 2>&1 &
    sim_pid=$!
    PIDS+=("$sim_pid")
    wait_url "$w/gen.log" "$sim_pid" >/dev/null || return 1
    kill "$sim_pid"; wait "$sim_pid" 2>/dev/null || true
    # The camera is the native simulator also for an ARM agent: only the agent is measured.
    RUST_LOG=warn "$NATIVE/qucam-sim" --listen 127.0.0.1:0 --dir "$w/camera" >"$w/sim.log" 2>&1 &
    sim_pid=$!
    PIDS+=("$sim_pid")
    url=$(wait_url "$w/sim.log" "$sim_pid") || return 1
    {
        echo "state_dir = \"$w/state\""
        printf '\n[[camera]]\nname = "gateway"\nurl = "%s"\n' "$url"
        printf '\n[sync]\nclips = "events"\npoll_interval = "1s"\n'
        printf '\n[retention]\ndelete_from_camera = "after_upload"\n'
        printf '\n[spool]\nmin_free_bytes = 0\n'
        printf '\n[log]\nlevel = "warn"\ntarget = "stderr"\n'
    } >"$w/agent.toml"
    if [ "$dest" = s3 ]; then
        "$NATIVE/examples/s3-test-server" --listen 127.0.0.1:0 --dir "$w/s3" --bucket fleet-video \
            --access-key AKIATESTQUCAMOFFLOAD --secret-key test-secret-key-for-qucam-offload-only \
            >"$w/s3.log" 2>&1 &
        s3_pid=$!
        PIDS+=("$s3_pid")
        s3_url=$(wait_url "$w/s3.log" "$s3_pid") || return 1
        # The defaults: multipart_threshold "auto", 8 MiB parts, 4 in parallel, 2 uploads at once.
        printf '\n[s3]\nbucket = "fleet-video"\nregion = "us-east-1"\nendpoint = "%s"\nforce_path_style = true\n' \
            "$s3_url" >>"$w/agent.toml"
    else
        printf '\n[local]\ndir = "%s"\n' "$w/dest" >>"$w/agent.toml"
    fi
    env -u AWS_CA_BUNDLE -u AWS_PROFILE -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL \
        AWS_ACCESS_KEY_ID=AKIATESTQUCAMOFFLOAD AWS_SECRET_ACCESS_KEY=test-secret-key-for-qucam-offload-only \
        AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null \
        AWS_SHARED_CREDENTIALS_FILE=/dev/null "${runner[@]}" "$bin/qucam-offload" -c "$w/agent.toml" run >"$w/agent.log" 2>&1 &
    agent_pid=$!
    PIDS+=("$agent_pid")
    sleep 8
    kill -0 "$agent_pid" 2>/dev/null || { echo "cross.sh: agent died:" >&2; cat "$w/agent.log" >&2; return 1; }
    idle0=$(awk '/^VmRSS/{print $2}' "/proc/$agent_pid/status")
    events=$(find "$w/stage" -type f -name '*.mp4' ! -name '*_00_*' | wc -l)
    t0=$(date +%s.%N)
    (cd "$w/stage" && find . -mindepth 1 -maxdepth 1 -exec mv {} "$w/camera/" \;)
    # Done when no event clip is left on the camera: the agent deletes only verified clips.
    for i in $(seq 1 1800); do
        left=$(find "$w/camera" -type f -name '*.mp4' ! -name '*_00_*' | wc -l)
        [ "$left" = 0 ] && break
        kill -0 "$agent_pid" 2>/dev/null || { echo "cross.sh: agent died:" >&2; cat "$w/agent.log" >&2; return 1; }
        sleep 0.5
    done
    t1=$(date +%s.%N)
    if [ "$left" != 0 ]; then
        echo "cross.sh: $label: the agent did not offload every event clip in 15 minutes" >&2
        cat "$w/agent.log" >&2
        return 1
    fi
    sleep 8
    idle1=$(awk '/^VmRSS/{print $2}' "/proc/$agent_pid/status")
    peak=$(awk '/^VmHWM/{print $2}' "/proc/$agent_pid/status")
    kill -TERM "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
    kill "$sim_pid" ${s3_pid:+"$s3_pid"}; wait "$sim_pid" ${s3_pid:+"$s3_pid"} 2>/dev/null || true
    echo "$label, $dest destination: agent idle $(mib $((idle0 * 1024))) MiB, peak $(mib $((peak * 1024))) MiB," \
        "idle after $(mib $((idle1 * 1024))) MiB ($events event clips of $MEM_SIZE bytes in $(awk "BEGIN{printf \"%.1f\", $t1-$t0}") s)"
}

FAIL=0
SUMMARY=()
NATIVE="$ROOT/target/release"
if [ "$MEM" = 1 ]; then
    # The camera simulator and the S3 server of --mem run natively; so does the reference agent.
    echo "== build x86_64 (release, for --mem)"
    # Apart: an example unifies the dev-dependencies' features into the binaries' dependencies.
    cargo build --release --locked --example s3-test-server
    cargo build --release --locked --bin qucam-offload --bin qucam-sim
fi
for a in "${ARCHES[@]}"; do
    t=$(triple "$a")
    g=$(gnu "$a")
    set_env "$a"
    bin="$ROOT/target/$t/release"
    if [ "$BUILD" = 1 ]; then
        echo "== build $t (release)"
        s=$SECONDS
        if ! cargo build --release --locked --target "$t" --bin qucam-offload --bin qucam-sim; then
            echo "cross.sh: $t: build failed" >&2
            FAIL=1
            continue
        fi
        echo "$t: built in $((SECONDS - s)) s"
    fi
    for b in qucam-offload qucam-sim; do
        [ -x "$bin/$b" ] || { echo "cross.sh: $bin/$b is missing" >&2; FAIL=1; continue 2; }
    done
    if command -v file >/dev/null; then file -L "$bin/qucam-offload" | sed 's/, BuildID[^,]*//'; fi
    size=$(stat -c %s "$bin/qucam-offload")
    simsize=$(stat -c %s "$bin/qucam-sim")
    line="$t: qucam-offload $(mib "$size") MiB ($size bytes), qucam-sim $(mib "$simsize") MiB (stripped)"
    echo "$line"
    SUMMARY+=("$line")

    if [ "$TEST" = 1 ]; then
        q=$(find_qemu "$a")
        run=("$q" -L "/usr/$g")
        echo "== smoke test $t under $(basename "$q")"
        if ! v=$("${run[@]}" "$bin/qucam-offload" --version) || ! echo "$v" | grep -q '^qucam-offload '; then
            echo "cross.sh: $t: --version failed: $v" >&2
            FAIL=1
            continue
        fi
        echo "$v"
        "${run[@]}" "$bin/qucam-sim" --version
        d=$(mktemp -d "$WORK/demo.XXXXXX")
        tv=()
        [ -x /usr/bin/time ] && tv=(/usr/bin/time -o "$WORK/time.out" -f '%e %M')
        if ! "${tv[@]}" "${run[@]}" "$bin/qucam-offload" demo --dir "$d" --clips 6 --size 200000 </dev/null >"$WORK/demo.log" 2>&1; then
            echo "cross.sh: $t: demo failed:" >&2
            cat "$WORK/demo.log" >&2
            FAIL=1
            continue
        fi
        sed 's/^/  /' "$WORK/demo.log"
        got=$(find "$d/bucket" -type f -name '*.mp4' 2>/dev/null | wc -l)
        left=$(find "$d/camera" -type f -name '*.mp4' ! -name '*_00_*' | wc -l)
        bad=0
        for f in $(find "$d/bucket" -type f -name '*.mp4' 2>/dev/null); do
            # each file is exactly the size generated
            [ "$(stat -c %s "$f")" = 200000 ] || bad=$((bad + 1))
        done
        if [ "$got" -lt 1 ] || [ "$left" != 0 ] || [ "$bad" != 0 ]; then
            echo "cross.sh: $t: demo: $got clips in $d/bucket, $left event clips left on the camera, $bad of the wrong size" >&2
            FAIL=1
            continue
        fi
        line="$t: demo ok under qemu: $got event clips in the destination"
        if [ ${#tv[@]} -gt 0 ]; then
            read -r secs kib <"$WORK/time.out"
            line+=", $secs s, peak RSS $(mib $((kib * 1024))) MiB (qemu's included)"
        fi
        echo "$line"
        SUMMARY+=("$line")
    fi
    if [ "$MEM" = 1 ]; then
        echo "== memory $t under qemu"
        q=$(find_qemu "$a")
        for dest in local s3; do
            if measure_mem "$t (qemu)" "$bin" "$dest" "$q" -L "/usr/$g" >"$WORK/mem.out"; then
                line=$(cat "$WORK/mem.out"); echo "$line"; SUMMARY+=("$line")
            else
                FAIL=1
            fi
        done
    fi
done

if [ "$MEM" = 1 ]; then
    echo "== memory x86_64 (native release binary)"
    for dest in local s3; do
        if measure_mem "x86_64 (native)" "$NATIVE" "$dest" >"$WORK/mem.out"; then
            line=$(cat "$WORK/mem.out"); echo "$line"; SUMMARY+=("$line")
        else
            FAIL=1
        fi
    done
fi

echo "== summary"
printf '%s\n' "${SUMMARY[@]}"
[ "$FAIL" = 0 ] || { echo "cross.sh: FAILED (see above)" >&2; exit 1; }
echo "cross.sh: ok"
