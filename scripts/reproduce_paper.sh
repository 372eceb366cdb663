#!/usr/bin/env bash
# Runs the paper's seven experiments (Tables 2-4 and the hybrid model), then
# writes RUNS_DIR/paper_table.md: every run's test metrics beside the paper's.
#
# Usage: scripts/reproduce_paper.sh RUNS_DIR [FLAGS...]
#   FLAGS go to every run, e.g. --config.data.cxr_dir=... --config.data.ct_dir=...
#   and the --config.model.pretrained.* folders written by `python -m hybridcovid.convert`.
#   VARIANT=demo runs every experiment on the built-in synthetic data instead.
#   SEEDS="0 1 2" runs each experiment once per seed (--config.seed, which also
#   draws the split), into RUNS_DIR/<experiment>/seed-<N>; the table then gives
#   each cell's mean and standard deviation across seeds. Hours on a GPU.
# A run that was interrupted resumes when the script is started again; a
# finished one is re-evaluated from its checkpoint, not retrained. The runs
# share one copy of the prepared data, RUNS_DIR/prepared_data.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
runs_dir=$(realpath -m "$1")
shift
variant=${VARIANT:+:$VARIANT}
root=$(cd "$(dirname "$0")/.." && pwd)
for experiment in cxr_resnet50 cxr_efficientnetb0 ct_resnet50 ct_efficientnetb0 \
                  pooled_resnet50 pooled_efficientnetb0 hybrid; do
  for seed in ${SEEDS:-default}; do
    workdir="${runs_dir}/${experiment}" seed_flags=()
    if [[ "${seed}" != default ]]; then
      workdir="${workdir}/seed-${seed}" seed_flags=(--config.seed="${seed}")
    fi
    python "${root}/main.py" --config="${root}/configs/${experiment}.py${variant}" \
      --workdir="${workdir}" "${seed_flags[@]}" \
      --config.data.tfds_dir="${runs_dir}/prepared_data" "$@"
  done
done
(cd "${root}" && python -m hybridcovid.report.paper --runs_dir="${runs_dir}")
