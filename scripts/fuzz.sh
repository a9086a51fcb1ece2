#!/usr/bin/env bash
# Fuzz every parser of outside input for a bounded time (fuzz/README.md):
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Builds the cargo-fuzz targets in fuzz/ (installing cargo-fuzz if missing), then runs
# each one after the other for SECONDS_PER_TARGET, starting from the committed seeds
# in fuzz/corpus/<target> plus what earlier runs found (fuzz/target/corpus/<target>).
# An input that runs longer than FUZZ_TIMEOUT seconds (default 10) counts as a hang.
# Exits non-zero when any target crashed or hung; the input is then in
# fuzz/artifacts/<target>/ (replay it with `fuzz/target/<triple>/release/<target> FILE`).
#
# cargo fuzz needs nightly-only compiler flags: on a stable toolchain RUSTC_BOOTSTRAP=1
# lets it use them. FUZZ_SANITIZER=none skips AddressSanitizer (default: address).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
sanitizer=${FUZZ_SANITIZER:-address}
timeout=${FUZZ_TIMEOUT:-10}
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

targets=("$@")
[ $# -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

echo "== building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
if [ $# -eq 0 ]; then
  cargo fuzz build -O --debug-assertions --sanitizer "$sanitizer"
else
  for target in "${targets[@]}"; do cargo fuzz build -O --debug-assertions --sanitizer "$sanitizer" "$target"; done
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=target/$triple/release

# What each target reads: its dictionary and its longest useful input.
dict_of() {
  case $1 in
    ingest_entry | engine_events | events_body) echo dict/ingest.dict ;;
    client_frame | jwt) echo dict/client.dict ;;
  esac
}
max_len_of() {
  case $1 in
    engine_events | events_body) echo 32768 ;;
    *) echo 4096 ;;
  esac
}

failed=()
summary=()
for target in "${targets[@]}"; do
  mkdir -p "target/corpus/$target" "artifacts/$target" "corpus/$target"
  log="target/$target.log"
  args=(-max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048
    -max_len="$(max_len_of "$target")" -print_final_stats=1
    -artifact_prefix="artifacts/$target/")
  dict=$(dict_of "$target")
  [ -z "$dict" ] || args+=(-dict="$dict")
  echo "== $target: ${seconds}s"
  status=0
  "$bin_dir/$target" "${args[@]}" "target/corpus/$target" "corpus/$target" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
  line="$target: ${execs:-?} execs, ${rate:-?}/s, ${cov:-no coverage line}"
  if [ "$status" -ne 0 ]; then
    why=$(grep -m1 -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^ ]+' "$log" || echo "exit $status")
    line="$line: FAILED ($why; see fuzz/$log and fuzz/artifacts/$target/)"
    failed+=("$target")
  fi
  echo "$line"
  summary+=("$line")
done

echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
