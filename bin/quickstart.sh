#!/usr/bin/env bash
# Quick start: install nexa into .venv, plan and run the example sweep on this machine with
# the local backend (no cluster needed), then show which configuration won.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/nexa ]]; then
  python3 -m venv .venv
  # the build extra (shiv, a setuptools that builds wheels) makes `inv build` work from here too
  .venv/bin/pip install -q --disable-pip-version-check -e '.[build]' 2>&1 | grep -v '^WARNING: Location' || true
fi
export PATH="$PWD/.venv/bin:$PATH"
run=runs/quickstart
rm -rf "$run"  # this script's own run folder, replaced on every run
nexa sweep --config bin/quickstart/lr_grid.toml --local --out "$run"
echo
echo "Output of each task ($run/logs/local_*.out):"
printf '%s\0' "$run"/logs/local_*.out | sort -zV | xargs -0 cat
# Each task appended its loss per epoch to $NEXA_METRICS_FILE ($run/metrics/<task>.jsonl):
# rank the tasks by it, and draw them.
echo
nexa results "$run" --metric loss --mode min --plot "$run/results.svg"
echo "Picture: $run/results.svg (open it in a browser)"
