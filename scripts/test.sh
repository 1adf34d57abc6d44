#!/usr/bin/env bash
# Sets up everything the tests need, runs ruff and mypy, then the whole suite (slow end-to-end tests included).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow" for the fast subset.
# A skip fails the run unless tests/conftest.py's ALLOWED_SKIPS lists it (see README, Tests).
set -euo pipefail
if [[ -n "${VIDPARSE_SHARED:-}" ]]; then export VIDPARSE_SHARED="$(cd "$VIDPARSE_SHARED" && pwd)"; fi
cd "$(dirname "$0")/.."
scripts/setup.sh test
export VIDPARSE_MODEL_DIR="${VIDPARSE_MODEL_DIR:-${VIDPARSE_SHARED:-$(cd .. && pwd)/shared}/models}"
# Lint and type check first (pyproject.toml says what each covers); mypy finds the package through a link, as the
# repository root is the package itself.
.venv/bin/ruff check .
mkdir -p .venv/typecheck && ln -sfn ../.. .venv/typecheck/vidparse
.venv/bin/mypy
# Where the environment sets PYTHONDONTWRITEBYTECODE (this kind of machine does), every process the tests start (a
# CLI run, its source and worker processes) compiled vidparse's modules again: about 0.8 s a run
unset PYTHONDONTWRITEBYTECODE
set +e
# Two test processes (VIDPARSE_TEST_PROCESSES sets how many; 0 runs the tests in this one), each given whole test files:
# many tests wait on real time (a live stream, a camera's reconnect, a server's start), so one process left a CPU idle
.venv/bin/python -m pytest -n "${VIDPARSE_TEST_PROCESSES:-2}" --dist loadfile "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit $status
