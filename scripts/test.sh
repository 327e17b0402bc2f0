#!/usr/bin/env bash
# The project's test command: Rust tests (no Python needed) on the best SIMD path and again on
# the scalar path, then the Python suite against the installed package. On a fresh environment
# it first installs what the Python suite needs: the package with its `test` extra when the
# package is missing, else just the missing `test` extra requirements (no rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=$(python scripts/missing_test_deps.py)
if [ "$missing" = "iqk-rs" ]; then
  echo "== installing the package with its test extra: pip install .[test]"
  python -m pip install --quiet ".[test]"
elif [ -n "$missing" ]; then
  echo "== installing the test extra's missing requirements: $missing"
  # shellcheck disable=SC2086  # one argument per requirement
  python -m pip install --quiet $missing
fi

cargo test --quiet
IQK_RS_SIMD=scalar cargo test --quiet --test golden --test companion_golden
python -m pytest -q "$@"
