#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after another, each for SECONDS (default 180).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: reply_decoder clip_name config_loader
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Works on the stable toolchain:
# RUSTC_BOOTSTRAP=1 lets it accept the nightly flags cargo-fuzz passes. Set
# FUZZ_SANITIZER=none where the address sanitizer is unavailable. Each target reads the
# tracked seeds in fuzz/seeds/<target>/ and grows fuzz/corpus/<target>/ (ignored by git);
# a crash lands in fuzz/artifacts/<target>/ and makes the script exit 1 at the end.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-180}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(reply_decoder clip_name config_loader)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
  exit 2
fi
export RUSTC_BOOTSTRAP=1
sanitizer=()
[ -n "${FUZZ_SANITIZER:-}" ] && sanitizer=(-s "$FUZZ_SANITIZER")

failed=()
for t in "${targets[@]}"; do
  [ -d "seeds/$t" ] || { echo "unknown target $t (no fuzz/seeds/$t)" >&2; exit 2; }
  mkdir -p "corpus/$t"
  echo "== fuzz $t for ${secs}s"
  if ! cargo fuzz run "${sanitizer[@]}" -j 1 "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -print_final_stats=1; then
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "all fuzz targets ran ${secs}s without a finding"
