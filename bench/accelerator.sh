#!/usr/bin/env bash
# bench/accelerator.py on a GPU/TPU VM, killed if it outlives its budget by a minute; its arguments
# pass through (--torch-ref PATHS, --budget-s N, --dry-run, ...). Results: docs/results/accelerator_<device>.{json,md}.
# Wheels in .whl/ (for a machine without a package registry) are installed to /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
budget=480
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [[ "${args[i]}" == "--budget-s" ]] && budget="${args[i + 1]%.*}"
  [[ "${args[i]}" == --budget-s=* ]] && budget="${args[i]#--budget-s=}" && budget="${budget%.*}"
done
exec timeout --signal=KILL "$((budget + 60))" python3 -u bench/accelerator.py "$@"
