#!/usr/bin/env bash
# One GPU check: benchmarks/gpu_check.py's cases in priority order, results in
# OUT/gpu_check.json and OUT/gpu_check.md as each finishes; stops within 8 minutes.
#
#   benchmarks/gpu_check.sh OUT [--dry-run]
#
# Needs jax (with CUDA on a GPU), flax, optax, orbax-checkpoint, absl-py and
# ml_collections; torch and torchvision for the PyTorch peer (skipped without
# them). No TensorFlow. Where ml_collections is missing and pip cannot reach an
# index, put its wheel in .whl/ (or $HYBRIDCOVID_WHEELS) beforehand:
#   pip download --no-deps -d .whl ml-collections
set -euo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT [--dry-run]}
shift
out=$(realpath -m "$out")
cd "$(dirname "$0")/.."
mkdir -p "$out"
if ! python3 -c 'import ml_collections' 2>/dev/null; then
  wheels=${HYBRIDCOVID_WHEELS:-.whl}
  if ! compgen -G "$wheels/ml_collections-*.whl" >/dev/null; then
    echo "error: ml_collections is not installed. Install it (pip install ml-collections)," \
         "or put its wheel in $wheels/ (pip download --no-deps -d $wheels ml-collections)." >&2
    exit 1
  fi
  site=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" \
    "$wheels"/ml_collections-*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
# The script keeps to its own budget (450 s, four times that for a dry run);
# this is the backstop.
backstop=465
if [[ " $* " == *" --dry-run "* ]]; then
  backstop=1815
fi
exec timeout --kill-after=5 "$backstop" python3 benchmarks/gpu_check.py --out="$out" "$@"
