#!/usr/bin/env bash
# SIGKILL lowbuild at random moments of a build, N times per engine (default 10), and check
# after each kill that nothing of the killed run remains once the next run has started:
# no build process, no working container, no temporary directory, no untagged image of
# its builds; the next build succeeds and the one after builds nothing.
# The test suite runs the same test with 3 kills per engine (tests/integration/test_interrupts.py).
#   usage: scripts/sigkill_trials.sh [N]      (engines: LOWBUILD_TEST_ENGINES, default all four)
set -euo pipefail
cd "$(dirname "$0")/.."
LOWBUILD_KILL_TRIALS="${1:-10}" exec .venv/bin/pytest -q tests/integration/test_interrupts.py \
    -k test_sigkill_at_random_moments
