#!/usr/bin/env bash
# Sets up vidparse and parses the sample video ../shared/data/video/vtest.avi (or $VIDPARSE_SHARED's) into
# vtest_parsed.mp4.
set -euo pipefail
shared="$(cd "${VIDPARSE_SHARED:-$(dirname "$0")/../../shared}" && pwd)"
cd "$(dirname "$0")/.."
scripts/setup.sh
export VIDPARSE_MODEL_DIR="${VIDPARSE_MODEL_DIR:-$shared/models}"
.venv/bin/vidparse run "$shared/data/video/vtest.avi" -o vtest_parsed.mp4 --workers 2 --masks vtest_masks --stats vtest_stats.jsonl "$@"
