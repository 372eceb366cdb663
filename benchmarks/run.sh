#!/usr/bin/env bash
# Benchmarks ResNet50, EfficientNetB0 and the hybrid against their peers, one
# table per model in OUT/<config>/benchmark.md (and .json). Extra arguments are
# config flags, e.g. --config.benchmark.batch_sizes='(8,32,128)' on a GPU.
set -euo pipefail
out=${1:?usage: benchmarks/run.sh OUT [--config.benchmark.FIELD=VALUE ...]}
shift
cd "$(dirname "$0")/.."
for config in cxr_resnet50 cxr_efficientnetb0 hybrid; do
  python main.py --mode=benchmark --config="configs/$config.py" --workdir="$out/$config" \
    --config.benchmark.peers=True "$@"
done
