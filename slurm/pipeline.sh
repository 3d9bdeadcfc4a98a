#!/usr/bin/env bash
# The whole training pipeline as SLURM jobs chained with --dependency=afterok:
#
#   tokenizer (pretrain.sbatch) -> tokenize (one task) -> dynamics (pretrain.sbatch)
#                                                     \-> decoder  (pretrain.sbatch, needs only the tokenizer)
#
# Each job starts when the one it depends on has completed successfully; a preempted job is requeued (and
# resumes) without breaking the chain, since afterok waits for the final completion of the requeued job.
# A failed job leaves its dependants pending with Reason=DependencyNeverSatisfied: fix, then resubmit from it.
#
# Usage: slurm/pipeline.sh FRAMES_DATA RUNS [NODES]
#   FRAMES_DATA: episode-clip shards (wm-video data collect/videos/lerobot); RUNS: folder for every run.
#   Env: TOK_CONFIG, DYN_CONFIG, DEC_CONFIG (YAML for each part), PRESET (default: base).
# Run it from the repository root (the scripts' logs go to logs/).
set -euo pipefail
DATA=${1:?episode-clip dataset}
RUNS=${2:?runs folder}
NODES=${3:-2}
PRESET=${PRESET:-base}
mkdir -p logs "$RUNS"
cfg() { [[ -n "${1:-}" ]] && echo "--config $1" || true; }

tok=$(sbatch --parsable --nodes="$NODES" slurm/pretrain.sbatch tokenizer "$DATA" "$RUNS/tokenizer" \
  $(cfg "${TOK_CONFIG:-}") --preset "$PRESET")
echo "tokenizer: job $tok"

tokenize=$(sbatch --parsable --dependency=afterok:"$tok" slurm/eval.sbatch \
  wm-video data tokenize --tokenizer "$RUNS/tokenizer/export" --data "$DATA" --out "$RUNS/tokens" --no-progress)
echo "tokenize:  job $tokenize (after $tok)"

dyn=$(sbatch --parsable --nodes="$NODES" --dependency=afterok:"$tokenize" slurm/pretrain.sbatch dynamics \
  "$RUNS/tokens" "$RUNS/dynamics" $(cfg "${DYN_CONFIG:-}") --preset "$PRESET")
echo "dynamics:  job $dyn (after $tokenize)"

dec=$(sbatch --parsable --nodes="$NODES" --dependency=afterok:"$tok" slurm/pretrain.sbatch decoder \
  "$DATA" "$RUNS/decoder" --tokenizer "$RUNS/tokenizer/export" $(cfg "${DEC_CONFIG:-}") --preset "$PRESET")
echo "decoder:   job $dec (after $tok)"
echo "watch: squeue -u $USER; logs in logs/"
