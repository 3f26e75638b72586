#!/usr/bin/env bash
# Threads of one `run --once` over a fleet of N simulated WAN cameras (one qucam-sim process,
# `--cameras N`) and a local S3 server (examples/s3-test-server.rs), all on 127.0.0.1.
# Prints the agent's peak thread count, peak RSS and wall time. Not a test.
#
#   scripts/bench-fleet-threads.sh [N] [CLIPS_PER_CAMERA] [CLIP_BYTES] [AGENT_BINARY]
#
# Build first: cargo build --release --bin qucam-offload --bin qucam-sim --example s3-test-server
# (BIN=target/debug for a debug build).
set -euo pipefail
N=${1:-200}
CLIPS=${2:-2}
SIZE=${3:-262144}
BIN=${BIN:-target/release}
AGENT=${4:-$BIN/qucam-offload}
W=$(mktemp -d "${TMPDIR:-/tmp}/qucam-fleet.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
export AWS_ACCESS_KEY_ID=AKIATESTQUCAMOFFLOAD AWS_SECRET_ACCESS_KEY=test-secret-key-for-qucam-offload-only \
    AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
wait_for() { # $1 = file, $2 = pattern
    for _ in $(seq 1 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; return 1
}
"$BIN/qucam-sim" --cameras "$N" --listen 127.0.0.1:0 --dir "$W/cameras" --generate "$CLIPS" \
    --size "$SIZE" --config-out "$W/cameras.toml" >"$W/sim.out" 2>"$W/sim.log" &
PIDS+=($!)
wait_for "$W/sim.out" "serving $N cameras"
"$BIN/examples/s3-test-server" --listen 127.0.0.1:0 --dir "$W/s3" --bucket fleet-video \
    --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" >"$W/s3.log" 2>&1 &
PIDS+=($!)
wait_for "$W/s3.log" "http://127.0.0.1:[0-9]"
S3_URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$W/s3.log" | head -1)
{
    echo "state_dir = \"$W/state\""
    echo
    cat "$W/cameras.toml"
    printf '[sync]\nclips = "all"\n\n[s3]\nbucket = "fleet-video"\nprefix = "f"\nregion = "us-east-1"\nendpoint = "%s"\nforce_path_style = true\n\n[retention]\ndelete_from_camera = "never"\n\n[spool]\nmin_free_bytes = 0\n\n[log]\nlevel = "warn"\n' "$S3_URL"
} >"$W/agent.toml"
start=$(date +%s.%N)
"$AGENT" -c "$W/agent.toml" run --once >"$W/agent.out" 2>"$W/agent.log" &
A=$!
PIDS+=("$A")
peak=0 rss=0
while kill -0 "$A" 2>/dev/null; do
    t=$(awk '/^Threads:/ {print $2}' "/proc/$A/status" 2>/dev/null || echo 0)
    r=$(awk '/^VmHWM:/ {print $2}' "/proc/$A/status" 2>/dev/null || echo 0)
    [ "${t:-0}" -gt "$peak" ] && peak=$t
    [ "${r:-0}" -gt "$rss" ] && rss=$r
    sleep 0.02
done
rc=0; wait "$A" || rc=$?
end=$(date +%s.%N)
objects=$(find "$W/s3" -type f -name '*.mp4' | wc -l)
echo "cameras=$N clips_each=$CLIPS exit=$rc objects=$objects peak_threads=$peak peak_rss_kib=$rss wall_s=$(echo "$end - $start" | bc)"
