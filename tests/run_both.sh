#!/usr/bin/env bash
# The test suite, both ways (what README's test command and CI run):
#   1. the default store on SQLite files;
#   2. when PULSE_TEST_POSTGRES_URL points at a PostgreSQL server: again with
#      PULSE_DATABASE_URL set to it, so every store a test makes is a fresh database there.
# Usage: tests/run_both.sh [PYTHON] [pytest args...]   (PYTHON defaults to .venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if [ $# -gt 0 ] && [ -x "$1" ] && [[ "$1" != -* ]]; then py=$1; shift; fi
workers=${PULSE_TEST_WORKERS:-2}

pass() {  # name, then the environment and pytest arguments
  local name=$1 start rc; shift
  start=$(date +%s)
  echo "tests: $name pass"
  env "$@"; rc=$?
  echo "tests: $name pass finished in $(( $(date +%s) - start )) s (exit $rc)"
  return $rc
}

unset PULSE_DATABASE_URL
follows=0; [ -n "${PULSE_TEST_POSTGRES_URL:-}" ] && follows=1
# (with a PostgreSQL pass to follow, the [postgres] variants of the tests parametrised over
# both backends are left to it, and it leaves their [sqlite] variants and the store-less
# modules to this one: see tests/conftest.py)
pass sqlite PULSE_TEST_POSTGRES_PASS_FOLLOWS=$follows "$py" -m pytest -n "$workers" -q "$@"; rc=$?
if [ $follows = 1 ]; then
  pass postgresql PULSE_DATABASE_URL="$PULSE_TEST_POSTGRES_URL" \
    "$py" -m pytest -n "$workers" -q "$@" || rc=1
else
  echo "tests: PULSE_TEST_POSTGRES_URL is not set: no PostgreSQL pass"
fi
exit $rc
