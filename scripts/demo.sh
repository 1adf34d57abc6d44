#!/usr/bin/env bash
# Sets up vidparse and parses the sample video ../shared/data/video/vtest.avi into vtest_parsed.mp4.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export VIDPARSE_MODEL_DIR="${VIDPARSE_MODEL_DIR:-$(cd .. && pwd)/shared/models}"
.venv/bin/vidparse run ../shared/data/video/vtest.avi -o vtest_parsed.mp4 --workers 2 --masks vtest_masks --stats vtest_stats.jsonl "$@"
