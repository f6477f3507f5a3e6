#!/usr/bin/env bash
# Refresh requirements.lock on purpose: resolve pyproject.toml's ranges (".[dev]") afresh in a
# throwaway venv, write the exact versions, then run the test suite on a venv built from the new lock.
#
#   scripts/update_lock.sh            (or: make lock)
#
# Packages held back on purpose are listed in HOLD below with the reason in requirements.lock's header;
# they keep their pinned version whatever the resolver picks. Review `git diff requirements.lock`
# before committing: a new release that changes results shows up as failing tests here, not in CI later.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
HOLD=(ml_dtypes)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip setuptools
"$work/venv/bin/python" -m pip install --quiet -e ".[dev]"

header="$(sed -n '/^[^#]/q;p' requirements.lock)"
{
    printf '%s\n' "$header"
    "$work/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v '^#' | while IFS= read -r line; do
        name="${line%%==*}"
        for held in "${HOLD[@]}"; do
            if [[ "${name,,}" == "${held,,}" ]]; then line="$(grep -i "^${held}==" requirements.lock)"; fi
        done
        printf '%s\n' "$line"
    done
} > "$work/lock"
mv "$work/lock" requirements.lock
rm -rf "$work"
trap - EXIT

echo "requirements.lock rewritten; rebuilding .venv from it and running the tests"
make clean test
