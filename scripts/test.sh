#!/usr/bin/env bash
# The project's test command: Rust tests (no Python needed) on the best SIMD path and again on
# the scalar path, then the Python suite against the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --quiet
IQK_RS_SIMD=scalar cargo test --quiet --test golden --test companion_golden
python -m pytest -q "$@"
