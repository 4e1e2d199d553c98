#!/usr/bin/env bash
# Reward-hacking benchmark (README "Reward hacking"): ReinFlow from the shipped Hopper flow policy on the proxy task
# hopper_fwd (forward velocity alone), with no regulariser, with ReinFlow's own (algo.reg_coef: squared distance
# to the frozen policy's actions) and with the DDRL data anchor (algo.data_coef: the pretraining loss on the
# medium demonstrations). Every run logs the true task's return (eval/true_*) and the diagnostics (diag/*).
# One run at a time; a finished run is skipped, an interrupted one resumed (--resume is exact).
# Usage: bash benchmarks/hacking.sh   Env: TASKS (default "hopper_fwd"), SEEDS (default "0 1"),
#   METHODS (default "none reg ddrl"), ITERATIONS (default 100), REG_COEF (default 0.1), DATA_COEF (default 0.01:
#   the DDRL reference's data_beta, a constant coefficient with the reverse KL off).
# Then: python benchmarks/hacking_table.py  (the last evaluation of each run; mean over seeds)
set -euo pipefail
export OMP_NUM_THREADS=1
RLFT=${RLFT:-rlft}
ITERATIONS=${ITERATIONS:-100}
for task in ${TASKS:-hopper_fwd}; do
  data=${task%_fwd}_medium
  for seed in ${SEEDS:-0 1}; do
    for method in ${METHODS:-none reg ddrl}; do
      case $method in
        none) args="" ;;
        reg) args="algo.reg_coef=${REG_COEF:-0.1}" ;;
        ddrl) args="algo.data_coef=${DATA_COEF:-0.01}" ;;
      esac
      name=hack-$task-$method-s$seed
      if [ -e runs/$name/metrics.jsonl ] && tail -1 runs/$name/metrics.jsonl | grep -q "\"step\": $ITERATIONS,.*diag/state_distance"; then continue; fi
      echo "$(date +%T) start $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
      resume=""; [ -e runs/$name/config.yaml ] && resume="--resume"
      $RLFT finetune algo=reinflow env=$task data=$data $args run.name=$name seed=$seed train.iterations=$ITERATIONS \
        eval.every=10 eval.episodes=10 train.checkpoint_every=5 $resume
      echo "$(date +%T) done $name"
    done
  done
done
