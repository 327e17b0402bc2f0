#!/usr/bin/env bash
# The project's test command: Rust tests (no Python needed), then the Python suite against the
# installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --quiet
python -m pytest -q "$@"
