#!/usr/bin/env bash
# Offline RL benchmark on the shipped Hopper-v5 data (benchmarks/RESULTS.md, "Offline RL"): DQL, BC
# (the same actor with eta 0 and one candidate) and OFQL, on medium and on a medium-expert mix, then
# BC of OFQL's actor; one run at a time; a finished run is skipped, an interrupted one resumed.
# Usage: bash benchmarks/offline_hopper.sh [STEPS_MEDIUM] [STEPS_MEDIUM_EXPERT]   (runs/$PREFIX-<data>-<method>)
# Env: PREFIX (default off), RUNS (default: all eight <data>:<method> pairs below), EVAL_EVERY (default
# 4000), CHECKPOINT_EVERY (default 1000), SEED (default 0).
# The 50k-step medium runs: PREFIX=off50k RUNS="medium:ofql medium:bc-ofql medium:dql medium:bc-dql" EVAL_EVERY=10000 \
#   CHECKPOINT_EVERY=2000 bash benchmarks/offline_hopper.sh 50000
# A seed of the constant-lr study: PREFIX=s1 SEED=1 RUNS="medium:dql medium:bc-dql" EVAL_EVERY=25000 CHECKPOINT_EVERY=5000 \
#   bash benchmarks/offline_hopper.sh 125000, then RUNS="medium:ofql medium:bc-ofql" with 150000.
set -euo pipefail
export OMP_NUM_THREADS=1
RLFT=${RLFT:-rlft}
[ -e runs/hopper-v5-medium-expert.zarr.zip ] || $RLFT data merge hopper-v5-medium hopper-v5-expert --out runs/hopper-v5-medium-expert.zarr.zip
for run in ${RUNS:-medium:dql medium:bc-dql medium:ofql medium-expert:dql medium-expert:bc-dql medium-expert:ofql medium:bc-ofql medium-expert:bc-ofql}; do
  data=${run%%:*}; method=${run#*:}
  steps=${1:-8000}; path=hopper-v5-medium
  [ $data = medium-expert ] && steps=${2:-$steps} && path=runs/hopper-v5-medium-expert.zarr.zip
  case $method in
    dql|ofql) args="algo=$method" ;;
    bc-*) args="algo=${method#bc-} algo.eta=0 algo.select.candidates=1" ;;
  esac
  name=${PREFIX:-off}-$data-$method
  if [ -e runs/$name/metrics.jsonl ] && tail -1 runs/$name/metrics.jsonl | grep -q "\"step\": $steps,.*eval/normalized_score"; then continue; fi
  echo "$(date +%T) start $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
  resume=""; [ -e runs/$name/config.yaml ] && resume="--resume"
  $RLFT offline $args data=hopper_medium data.path=$path run.name=$name train.steps=$steps seed=${SEED:-0} \
    train.checkpoint_every=${CHECKPOINT_EVERY:-1000} eval.every=${EVAL_EVERY:-4000} eval.episodes=10 $resume
  echo "$(date +%T) done $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
done
