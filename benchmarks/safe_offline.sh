#!/usr/bin/env bash
# Safe offline RL benchmark (benchmarks/RESULTS.md, "Safe offline RL"): FISOR against BC on all data, BC on the
# safe episodes and reward-only IQL, on velocity-constrained tasks, with data made here by DSRL's recipe.
# Data per task (runs/safe-data/<task>-{mixed,safe}.zarr.zip): the merge of every store under
# runs/collect-<task>-*/data/ (rlft collect runs with different expert.cost_penalty, or the shipped
# unconstrained experts recorded in the task), and its episodes within the cost limit (rlft data filter). The toy
# (TASKS=pointmass_safe) records 50k steps of its scripted mixed demonstrator (half the sub-envs take the unsafe
# shortcut, half the detour) with rlft collect.
# One run at a time; a finished run is skipped, an interrupted one resumed (--resume is exact).
# Usage: bash benchmarks/safe_offline.sh   Env: TASKS (default "hopper_vel walker2d_vel halfcheetah_vel"),
#   SEEDS (default "0 1"), METHODS (default "fisor bc-all bc-safe ofql"), STEPS (default 40000),
#   ACTOR_BATCH (FISOR's actor batch, default 256: the reference's 1024 costs 4x on this CPU), CHECKPOINT_EVERY (2000).
# Then: python benchmarks/safe_table.py  (normalized reward and cost of the final evaluations, 20 episodes each)
set -euo pipefail
export OMP_NUM_THREADS=1
RLFT=${RLFT:-rlft}
STEPS=${STEPS:-40000}
# BC baselines train FISOR's own actor (LN-ResNet 3 x 256, dropout 0.1) with equal weights: IQL at temperature 0
ACTOR="algo.policy.backbone.depth=7 algo.policy.backbone.residual=true algo.policy.backbone.layer_norm=true algo.policy.backbone.dropout=0.1 algo.policy.backbone.time_dim=64"
mkdir -p runs/safe-data
for task in ${TASKS:-hopper_vel walker2d_vel halfcheetah_vel}; do
  mixed=runs/safe-data/$task-mixed.zarr.zip; safe=runs/safe-data/$task-safe.zarr.zip
  if [ $task = pointmass_safe ] && [ ! -e $mixed ]; then
    $RLFT collect env=$task expert.scripted=mixed "datasets.kinds=[scripted]" datasets.steps=50000 datasets.n_envs=20 run.name=collect-$task-mixed
    mv runs/collect-$task-mixed/data/safepointmass-v0-mixed.zarr.zip $mixed
  fi
  if [ ! -e $mixed ]; then
    stores=$(ls runs/collect-$task-*/data/*.zarr.zip 2>/dev/null || true)
    [ $(echo $stores | wc -w) -ge 2 ] || { echo "skip $task: fewer than two datasets under runs/collect-$task-*/data/"; continue; }
    $RLFT data merge $stores --out $mixed
  fi
  limit=10; [ $task = pointmass_safe ] && limit=0   # the env's cost limit (the toy's 1 means: never enter the hazard)
  [ -e $safe ] || $RLFT data filter $mixed --max-cost $limit --out $safe
  for seed in ${SEEDS:-0 1}; do
    for method in ${METHODS:-fisor bc-all bc-safe ofql}; do
      case $method in
        fisor) args="algo=fisor algo.actor_batch_size=${ACTOR_BATCH:-256}"; data=$mixed ;;
        bc-all) args="algo=iql algo.temperature=0 $ACTOR"; data=$mixed ;;
        bc-safe) args="algo=iql algo.temperature=0 $ACTOR"; data=$safe ;;
        ofql) args="algo=ofql"; data=$mixed ;;
      esac
      name=safe-$task-$method-s$seed
      if [ -e runs/$name/metrics.jsonl ] && tail -1 runs/$name/metrics.jsonl | grep -q "\"step\": $STEPS,.*eval/cost_mean"; then continue; fi
      echo "$(date +%T) start $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
      resume=""; [ -e runs/$name/config.yaml ] && resume="--resume"
      $RLFT offline $args env=$task data.path=$data data.env=$task run.name=$name seed=$seed train.steps=$STEPS \
        train.checkpoint_every=${CHECKPOINT_EVERY:-2000} eval.episodes=20 $resume
      echo "$(date +%T) done $name"
    done
  done
done
