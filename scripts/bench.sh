#!/usr/bin/env bash
# Offload benchmark: qucam-offload vs. a sequential peer (curl, then rclone copy or aws s3 cp).
#
# Moves CLIPS clips of SIZE bytes from a qucam-sim camera to an s3s-fs S3 server
# (examples/s3-test-server.rs), both on 127.0.0.1, once per scenario in SCENARIOS, and prints
# seconds, MB/s (10^6 bytes/s), peak RSS and the agent/peer throughput ratio. BENCHMARKS.md
# has results and notes.
#
# Usage: scripts/bench.sh [--install] [--no-build] [--peer rclone|aws] [--matched] [--keep]
#   --install    apt-get install the missing tools first (root only): time curl rclone
#   --no-build   use the binaries already in target/release ($CARGO_TARGET_DIR/release if set)
#   --peer P     peer uploader: rclone (default when installed) or aws (AWS CLI)
#   --matched    rclone and the agent both upload multipart from 16 MiB, 8 MiB parts, 4 at
#                a time (the agent's multipart_threshold pinned to "16MiB" instead of "auto",
#                rclone's single PUT below 200 MiB turned off): the same work for the S3
#                server, so the ratio measures the overlap alone
#   --keep       keep the work directory (printed at the end)
# Environment (defaults in brackets):
#   CLIPS [8]  SIZE [67108864]  RUNS [1]: runs per scenario and tool, the fastest is kept
#   SCENARIOS ["0:0 20000000:0 20000000:20000000"]: CAMERA:UPLINK pairs in bytes/s, 0 =
#     unlimited. CAMERA is qucam-sim --bandwidth (per download); UPLINK is s3-test-server
#     --bandwidth (request bodies, all connections together).
#   AGENT_TOML_SYNC / AGENT_TOML_S3: extra lines for the agent's [sync] / [s3] sections
#   BENCH_TMP [$TMPDIR or /tmp]: where the work directory is made
set -euo pipefail
shopt -s inherit_errexit

# Arithmetic with awk (no bc needed): calc FORMAT EXPR
calc() { awk "BEGIN{printf \"$1\", $2}"; }

CLIPS=${CLIPS:-8}
SIZE=${SIZE:-67108864}
SCENARIOS=${SCENARIOS:-"0:0 20000000:0 20000000:20000000"}
RUNS=${RUNS:-1}
AGENT_TOML_SYNC=${AGENT_TOML_SYNC:-}
AGENT_TOML_S3=${AGENT_TOML_S3:-}
INSTALL=0
BUILD=1
KEEP=0
MATCHED=0
PEER=""
while [ $# -gt 0 ]; do
    case "$1" in
        --install) INSTALL=1 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        --matched) MATCHED=1 ;;
        --peer) PEER=${2:?--peer needs rclone or aws}; shift ;;
        -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)

# ---- tools ----------------------------------------------------------------------------------
missing=()
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/time ] && /usr/bin/time -f %M true >/dev/null 2>&1 || missing+=(time)
if [ -z "$PEER" ]; then
    if command -v rclone >/dev/null; then PEER=rclone
    elif command -v aws >/dev/null; then PEER=aws
    else PEER=rclone; missing+=(rclone)
    fi
elif ! command -v "$PEER" >/dev/null; then
    missing+=("$PEER")
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ]; then
        pkgs=()
        for m in "${missing[@]}"; do
            case "$m" in aws) pkgs+=(awscli) ;; *) pkgs+=("$m") ;; esac
        done
        apt-get update -qq && apt-get install -y -qq "${pkgs[@]}"
    else
        echo "bench.sh: missing tools: ${missing[*]}" >&2
        echo "  install them:  apt-get install -y time curl rclone   (or: pip install awscli)" >&2
        echo "  or, as root:   scripts/bench.sh --install" >&2
        exit 2
    fi
fi

# --matched: the agent's default [s3] upload settings with a fixed 16 MiB multipart threshold
# (not "auto", which sends fast uploads in one PUT), and the same in rclone's flags.
RCLONE_MATCHED=()
PEER_LABEL="curl + $PEER"
if [ "$MATCHED" = 1 ]; then
    [ "$PEER" = rclone ] || { echo "bench.sh: --matched applies to --peer rclone" >&2; exit 2; }
    RCLONE_MATCHED=(--s3-upload-cutoff 16Mi --s3-chunk-size 8Mi --s3-upload-concurrency 4)
    case "$AGENT_TOML_S3" in
        *multipart_threshold*) ;;
        *) AGENT_TOML_S3="multipart_threshold = \"16MiB\"
$AGENT_TOML_S3" ;;
    esac
    PEER_LABEL="curl + rclone*"
fi

if [ "$BUILD" = 1 ]; then
    cargo build --release --bins --examples
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
for b in "$BIN/qucam-offload" "$BIN/qucam-sim" "$BIN/examples/s3-test-server"; do
    [ -x "$b" ] || { echo "bench.sh: $b is missing (run without --no-build)" >&2; exit 2; }
done

# ---- work dir and servers --------------------------------------------------------------------
W=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/qucam-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then echo "work directory kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT

ACCESS_KEY=AKIATESTQUCAMOFFLOAD
SECRET_KEY=test-secret-key-for-qucam-offload-only
BUCKET=fleet-video
export AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=us-east-1 \
    AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
# Plain HTTP on loopback: a CA bundle from the environment only gets in the way (rclone
# refuses to start with AWS_CA_BUNDLE set).
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_CA_BUNDLE 2>/dev/null || true

# Waits for "... serving on http://ADDR" in $1 (a log file) and prints the URL.
wait_url() {
    local log=$1 pid=$2 i
    for i in $(seq 1 600); do
        if grep -q 'serving on http://' "$log" 2>/dev/null; then
            grep -o 'http://[0-9.:]*' "$log" | head -1
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "bench.sh: server died:" >&2; cat "$log" >&2; return 1; }
        sleep 0.2
    done
    echo "bench.sh: server did not start: $log" >&2
    return 1
}

S3DIR="$W/s3"
start_s3() { # $1 = uplink bandwidth (0 = unlimited)
    "$BIN/examples/s3-test-server" --listen 127.0.0.1:0 --dir "$S3DIR" --bucket "$BUCKET" \
        --bandwidth "$1" >"$W/s3.log" 2>&1 &
    S3_PID=$!
    PIDS+=("$S3_PID")
    S3_URL=$(wait_url "$W/s3.log" "$S3_PID")
}
stop_s3() {
    kill "$S3_PID" 2>/dev/null || true
    wait "$S3_PID" 2>/dev/null || true
}

CAM="$W/camera"
echo "generating $CLIPS clips of $SIZE bytes in $CAM ..." >&2
# Clips are generated once, by the first simulator: names depend on the current hour, so a
# later --generate could add a second set.
GENERATE=(--generate "$CLIPS" --size "$SIZE")
start_sim() { # $1 = bandwidth (0 = unlimited)
    local bw=()
    [ "$1" != 0 ] && bw=(--bandwidth "$1")
    RUST_LOG=warn "$BIN/qucam-sim" --listen 127.0.0.1:0 --dir "$CAM" "${GENERATE[@]}" \
        "${bw[@]}" >"$W/sim.log" 2>&1 &
    SIM_PID=$!
    PIDS+=("$SIM_PID")
    SIM_URL=$(wait_url "$W/sim.log" "$SIM_PID")
    GENERATE=()
}
stop_sim() {
    kill "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" 2>/dev/null || true
    : >"$W/sim.log"
}

TOTAL=$((CLIPS * SIZE))
CLIP_FILES=()

# Checks that the bucket holds every clip, byte for byte, under $1/.../name.
check_bucket() {
    local prefix=$1 rel name obj n=0
    for rel in "${CLIP_FILES[@]}"; do
        name=$(basename "$rel")
        obj=$(find "$S3DIR/$BUCKET/$prefix" -type f -name "$name" | head -1)
        if [ -z "$obj" ] || ! cmp -s "$obj" "$CAM/$rel"; then
            echo "bench.sh: $prefix: $name missing or different in the bucket" >&2
            return 1
        fi
        n=$((n + 1))
    done
    n=$(find "$S3DIR/$BUCKET/$prefix" -type f | wc -l)
    [ "$n" = "$CLIPS" ] || { echo "bench.sh: $prefix: $n objects, expected $CLIPS" >&2; return 1; }
}

empty_bucket() { rm -rf "${S3DIR:?}/$BUCKET"/* "$S3DIR"/.upload* 2>/dev/null || true; }

# Runs a command under GNU time; appends "seconds peak_kib" to $W/times.
timed() {
    /usr/bin/time -o "$W/time.out" -f '%e %M' "$@"
    cat "$W/time.out" >>"$W/times"
}

run_agent() { # $1 = tag; prints "seconds peak_kib"
    local tag=$1 state="$W/state-$1"
    rm -rf "$state"
    cat >"$W/agent-$tag.toml" <<EOF
state_dir = "$state"

[[camera]]
name = "bench"
url = "$SIM_URL"

[sync]
clips = "all"
$AGENT_TOML_SYNC

[s3]
bucket = "$BUCKET"
prefix = "agent"
region = "us-east-1"
endpoint = "$S3_URL"
force_path_style = true
$AGENT_TOML_S3

[retention]
delete_from_camera = "never"

[spool]
min_free_bytes = 0

[log]
level = "warn"
EOF
    : >"$W/times"
    timed "$BIN/qucam-offload" run --once -c "$W/agent-$tag.toml" >"$W/agent-$tag.log" 2>&1 || {
        echo "bench.sh: agent failed:" >&2; cat "$W/agent-$tag.log" >&2; return 1; }
    check_bucket agent
    cat "$W/times"
}

run_peer() { # $1 = tag; prints "seconds peak_kib"
    local tag=$1 dl="$W/peer-$1" rel url start end peak secs
    rm -rf "$dl"
    mkdir -p "$dl"
    : >"$W/times"
    start=$(date +%s.%N)
    for rel in "${CLIP_FILES[@]}"; do
        rel=${rel#./}
        url="$SIM_URL/storage/sdcard1/queclink/video/$rel"
        mkdir -p "$dl/$(dirname "$rel")"
        timed curl -sS --fail -H 'clientId: qucam-bench' -o "$dl/$rel" "$url"
    done
    echo "$(date +%s.%N) $start" >"$W/curl-done"
    case "$PEER" in
        rclone)
            RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
            RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=$ACCESS_KEY \
            RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=$SECRET_KEY \
            RCLONE_CONFIG_BENCH_ENDPOINT=$S3_URL RCLONE_CONFIG_BENCH_REGION=us-east-1 \
            RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true RCLONE_S3_NO_CHECK_BUCKET=true \
            RCLONE_CONFIG=/dev/null \
                timed rclone copy "${RCLONE_MATCHED[@]}" "$dl" "bench:$BUCKET/peer" \
                >"$W/peer-$tag.log" 2>&1 ;;
        aws)
            timed aws --endpoint-url "$S3_URL" s3 cp --recursive --only-show-errors \
                "$dl" "s3://$BUCKET/peer" >"$W/peer-$tag.log" 2>&1 ;;
    esac || { echo "bench.sh: $PEER failed:" >&2; cat "$W/peer-$tag.log" >&2; return 1; }
    end=$(date +%s.%N)
    check_bucket peer
    secs=$(calc %.2f "$end - $start")
    peak=$(awk 'BEGIN{m=0} {if ($2>m) m=$2} END{print m}' "$W/times")
    rm -rf "$dl"
    echo "$secs $peak"
}

# Keeps the fastest of RUNS runs of $1 (run_agent or run_peer); peak RSS is the max of all.
best_of() {
    local fn=$1 tag=$2 i out best="" peak=0 s p
    for i in $(seq 1 "$RUNS"); do
        empty_bucket
        out=$($fn "$tag")
        read -r s p <<<"$out"
        if [ -z "$best" ] || [ "$(calc %d "$s < $best")" = 1 ]; then best=$s; fi
        [ "$p" -gt "$peak" ] && peak=$p
    done
    echo "$best $peak"
}

# One table row: camera link, uplink, tool, seconds, peak KiB, ratio.
row() {
    printf '| %-11s | %-9s | %-13s | %7.2f | %6.1f | %12.1f | %5s |' "$1" "$2" "$3" "$4" \
        "$(calc %.3f "$TOTAL / $4 / 1000000")" "$(calc %.3f "$5 / 1024")" "$6"
}
# "unlimited" or "N MB/s" for a bytes/s figure.
rate_name() {
    if [ "$1" = 0 ]; then echo unlimited; else echo "$(calc %g "$1 / 1000000") MB/s"; fi
}

# ---- runs ------------------------------------------------------------------------------------
ROWS=()
NOTES=()
for sc in $SCENARIOS; do
    cam=${sc%%:*}
    up=${sc#*:}
    [ "$up" = "$sc" ] && up=0
    start_sim "$cam"
    start_s3 "$up"
    mapfile -t CLIP_FILES < <(cd "$CAM" && find . -type f | sort)
    [ "${#CLIP_FILES[@]}" = "$CLIPS" ] || { echo "bench.sh: camera holds ${#CLIP_FILES[@]} clips, expected $CLIPS" >&2; exit 1; }
    cname=$(rate_name "$cam")
    uname=$(rate_name "$up")
    echo "camera $cname, uplink $uname: qucam-offload ..." >&2
    res=$(best_of run_agent "$sc")
    read -r a_s a_p <<<"$res"
    echo "camera $cname, uplink $uname: $PEER_LABEL ..." >&2
    res=$(best_of run_peer "$sc")
    read -r p_s p_p <<<"$res"
    read -r c_end c_start <"$W/curl-done"
    stop_sim
    stop_s3
    ratio=$(calc %.2f "$p_s / $a_s")
    ROWS+=("$(row "$cname" "$uname" qucam-offload "$a_s" "$a_p" "${ratio}x")")
    ROWS+=("$(row "$cname" "$uname" "$PEER_LABEL" "$p_s" "$p_p" "1.00x")")
    NOTES+=("camera $cname, uplink $uname: curl alone took $(calc %.2f "$c_end - $c_start") s ($(calc %.1f "$TOTAL / ($c_end - $c_start) / 1000000") MB/s from the camera)")
done

echo
echo "$CLIPS clips x $SIZE bytes = $TOTAL bytes, $(nproc) cores, 127.0.0.1; best of $RUNS run(s)"
echo "qucam-offload $("$BIN/qucam-offload" --version 2>/dev/null | awk '{print $2}'), curl $(curl --version | awk 'NR==1{print $2}'), $(
    case "$PEER" in rclone) rclone version | head -1 ;; aws) aws --version 2>&1 ;; esac)"
echo
echo "| camera link | S3 uplink | tool          | seconds |   MB/s | peak RSS MiB | ratio |"
echo "|-------------|-----------|---------------|--------:|-------:|-------------:|------:|"
printf '%s\n' "${ROWS[@]}"
echo
printf '%s\n' "${NOTES[@]}"
echo "ratio = agent throughput / peer throughput; peer peak RSS = max over its curl and $PEER processes"
[ "$MATCHED" = 1 ] && echo "rclone* = rclone ${RCLONE_MATCHED[*]} (the agent's upload settings, multipart_threshold = \"16MiB\")"
true
