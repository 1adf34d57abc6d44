#!/usr/bin/env bash
# Sets up everything the tests need, then runs the whole suite (slow end-to-end tests included).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" for the fast subset.
# A skip fails the run unless tests/conftest.py's ALLOWED_SKIPS lists it (see README, Tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
export VIDPARSE_MODEL_DIR="${VIDPARSE_MODEL_DIR:-$(cd .. && pwd)/shared/models}"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit $status
