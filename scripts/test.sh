#!/usr/bin/env bash
# Run every test of the rayops.disk collection: the command .ci/run calls.
#
#   bash scripts/test.sh            # set the machine up (scripts/setup.sh), then all stages
#   bash scripts/test.sh -k ray     # extra arguments go to the final pytest run
#
# Stages: yamllint, ansible-lint (production profile), ansible-doc, galaxy build,
# ansible-test sanity, units and integration (on a copy at
# .../ansible_collections/rayops/disk), molecule (the role on a Debian container),
# then pytest over tests/unit and tests/system (real Ray, real Docker containers,
# real promtool, cron and logrotate).
# Every stage runs; the script fails at the end if any stage failed.
# TEST_STAGES="yamllint ansible-lint" runs only the stages named (the lint job of .gitlab-ci.yml).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
bash scripts/setup.sh || { echo "test: setup failed" >&2; exit 1; }

export PATH="$REPO/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$REPO/.build/collections"
export PYTHONPATH="$REPO/.build/collections"
export RAY_USAGE_STATS_ENABLED=0
failed=()

stage() {
    local name="$1"
    shift
    if [ -n "${TEST_STAGES:-}" ] && [[ " $TEST_STAGES " != *" $name "* ]]; then
        return 0
    fi
    echo
    echo "=== $name"
    local start=$SECONDS
    if "$@"; then
        echo "=== $name: ok ($((SECONDS - start)) s)"
    else
        echo "=== $name: FAILED ($((SECONDS - start)) s)"
        failed+=("$name")
    fi
}

in_test_copy() {
    local copy
    copy="$(bash scripts/sync-test-copy.sh)" && (cd "$copy" && "$@")
}

# pytest's scratch space may hold a 10,000-deep tree from an aborted run, which
# pytest's own cleanup (a recursive rmtree) cannot remove.
rm -rf "/tmp/pytest-of-$(id -un)"

stage yamllint yamllint --strict .
stage ansible-lint ansible-lint
stage ansible-doc bash -c "ansible-doc rayops.disk.ray_tmp_usage rayops.disk.ray_worker_cleanup rayops.disk.ray_log_config rayops.disk.ray_diagnose rayops.disk.ray_node_info >/dev/null && ansible-doc -t role rayops.disk.ray_cleanup >/dev/null && ansible-doc -t filter rayops.disk.ray_cleanup_table rayops.disk.ray_report_table rayops.disk.ray_node_report rayops.disk.ray_node_outcome rayops.disk.ray_diagnose_table rayops.disk.ray_node_findings >/dev/null"
stage galaxy-build ansible-galaxy collection build --force --output-path .build/dist
stage sanity in_test_copy ansible-test sanity --python 3.11 --color no
stage units in_test_copy ansible-test units --python 3.11 --local --color no
stage integration in_test_copy ansible-test integration --python 3.11 --local --color no
stage molecule molecule test --all
stage pytest pytest -p no:cacheprovider -ra tests/unit tests/system "$@"

echo
if [ "${#failed[@]}" -gt 0 ]; then
    echo "test: FAILED stages: ${failed[*]}"
    exit 1
fi
echo "test: all stages passed"
