#!/usr/bin/env bash
# Runs the README's demo once per seed, prints each run's test accuracy and wall
# time, then writes OUT.md and OUT.json with all of them and the machine.
#
# Usage: scripts/demo_seeds.sh RUNS_DIR OUT [SEED...]    (seeds 0-4 by default)
#   Each seed trains in RUNS_DIR/seed<N> with an empty compilation cache of its
#   own, so that every time includes compiling, as a first run on a machine does.
#   FLAGS adds config flags to every run, e.g. FLAGS='--config.train.epochs=7'.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
runs_dir=$(realpath -m "$1")
out=$(realpath -m "$2")
shift 2
seeds=("$@")
if [[ ${#seeds[@]} -eq 0 ]]; then
  seeds=(0 1 2 3 4)
fi
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "${runs_dir}" "$(dirname "${out}")"
for seed in "${seeds[@]}"; do
  workdir="${runs_dir}/seed${seed}"
  rm -rf "${workdir}"
  start=$(date +%s%N)
  # shellcheck disable=SC2086  # FLAGS holds several flags.
  python "${root}/main.py" --config="${root}/configs/hybrid.py:demo" --workdir="${workdir}" \
    --config.seed="${seed}" --config.compilation_cache_dir="${workdir}/compilation_cache" \
    ${FLAGS:-} > "${workdir}.log" 2>&1
  end=$(date +%s%N)
  echo "$(( (end - start) / 1000000 ))e-3" > "${workdir}/wall_seconds"
  (cd "${root}" && python -m hybridcovid.demo_seeds --runs_dir="${runs_dir}" --seeds="${seed}")
done
seed_list=$(IFS=,; echo "${seeds[*]}")
(cd "${root}" && python -m hybridcovid.demo_seeds --runs_dir="${runs_dir}" --seeds="${seed_list}" \
   --out="${out}" --config_flags="${FLAGS:-}")
