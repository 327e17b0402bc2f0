#!/usr/bin/env bash
# Run the fuzz targets in fuzz/ (atheris, coverage-guided) for SECONDS in total, default 90,
# split evenly over the three targets: GGUF reader, imatrix readers, quantize pipeline.
# Seeds are cut from tests/data/tiny-llama-f16.gguf by fuzz/make_corpus.py.
#
#   FUZZ_CORPUS=DIR      keep the growing corpus there across runs (default: a temp dir)
#   FUZZ_ARTIFACTS=DIR   where a failing input is saved (default: fuzz-artifacts/)
#   FUZZ_STATS=DIR       write per-target outcome counts (JSON) there
#   FUZZ_TARGETS="gguf imatrix quantize"   which targets to run
#   FUZZ_SEED=N          libFuzzer's seed (default 0: a new random one each run); CI pins one
#                        so that its run is repeatable, longer runs explore with random seeds
#
# Exits non-zero, naming the saved input, on the first traceback, panic or NaN output.
# Installs the `fuzz` extra's requirements (atheris) when the installed package lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
missing=$("$python" scripts/missing_test_deps.py fuzz)
if [ -n "$missing" ] && [ "$missing" != "iqk-rs" ]; then
    echo "== installing the fuzz extra's missing requirements: $missing"
    # shellcheck disable=SC2086  # one argument per requirement
    "$python" -m pip install --quiet $missing
fi
total=${1:-90}
targets=${FUZZ_TARGETS:-gguf imatrix quantize}
n_targets=$(wc -w <<<"$targets")
per=$(( total / n_targets > 1 ? total / n_targets : 1 ))

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
corpus=${FUZZ_CORPUS:-$work/corpus}
artifacts=${FUZZ_ARTIFACTS:-fuzz-artifacts}
mkdir -p "$artifacts"
"$python" fuzz/make_corpus.py "$work/seeds"

for t in $targets; do
    mkdir -p "$corpus/$t"
    echo "== fuzz $t for ${per}s"
    # -timeout: one input taking longer counts as a hang; -rss_limit_mb: as a memory blow-up
    "$python" "fuzz/fuzz_$t.py" "$corpus/$t" "$work/seeds/$t" \
        -max_total_time="$per" -timeout=30 -rss_limit_mb=3072 -max_len=131072 -seed="${FUZZ_SEED:-0}" \
        -artifact_prefix="$artifacts/$t-" -print_final_stats=1 2> "$work/$t.log" || {
        tail -n 60 "$work/$t.log"
        echo "fuzz $t: failure; input saved under $artifacts/" >&2
        exit 1
    }
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$work/$t.log" || true
done
