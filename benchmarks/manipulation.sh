#!/usr/bin/env bash
# Manipulation benchmark (README "Manipulation"): robosuite state tasks, sparse success reward.
# Per task: record scripted demonstrations (rlft collect), pretrain a flow policy on them (the base), fine-tune it
# with ReinFlow and DPPO-style chain PPO on the success reward, evaluate base and fine-tuned policies on 100 episodes.
# Steps already done are skipped; an interrupted fine-tuning run resumes exactly (--resume).
# Usage: bash benchmarks/manipulation.sh   Env: TASKS (default "lift can"), SEEDS (default "0"), METHODS
#   (default "reinflow"; for dppo set METHODS_DPPO=1 too: it pretrains a DDPM base beside the flow one),
#   ITERATIONS (default 150), DEMOS / QUALITY / PRETRAIN_STEPS (the base; defaults below),
#   N_ENVS / N_STEPS (one iteration: N_ENVS x N_STEPS chunks of 4 env steps).
# Results: runs/manip-<task>-base-eval.json (the base) and runs/manip-<task>-<method>-s<seed>-eval.json (100 episodes).
set -euo pipefail
export OMP_NUM_THREADS=1 MUJOCO_GL=${MUJOCO_GL:-egl}
RLFT=${RLFT:-rlft}
ITERATIONS=${ITERATIONS:-150}
N_ENVS=${N_ENVS:-20}
N_STEPS=${N_STEPS:-75}   # 75 chunks x 4 = one 300-step episode per env and iteration
for task in ${TASKS:-lift can}; do
  case $task in  # the base: few, low-skill demonstrations and a short pretraining, so it starts at 20-60% success
    lift) demos=${DEMOS:-10}; quality=${QUALITY:-worse}; steps=${PRETRAIN_STEPS:-300} ;;
    can) demos=${DEMOS:-200}; quality=${QUALITY:-mixed}; steps=${PRETRAIN_STEPS:-3000} ;;
  esac
  store=runs/manip-$task-demos/data/$task-v0-$quality.zarr.zip
  [ -e "$store" ] || $RLFT collect env=$task demos.n=$demos demos.quality=$quality datasets.n_envs=8 run.name=manip-$task-demos
  for preset in flow_mlp ${METHODS_DPPO:+diffusion_mlp}; do  # the base: flow for ReinFlow, DDPM for DPPO
    base=runs/manip-$task-base; [ $preset = diffusion_mlp ] && base=runs/manip-$task-base-ddpm
    [ -e "$base/policy.json" ] || $RLFT pretrain policy=$preset env=$task data.path=$store data.env=$task train.steps=$steps \
      train.warmup=50 ema.start=100 train.checkpoint_every=$steps eval.episodes=0 run.name=${base#runs/}
    [ -e "$base-eval.json" ] || $RLFT eval run=$base n_episodes=100 n_envs=20 --json > "$base-eval.json"
  done
  for seed in ${SEEDS:-0}; do
    for method in ${METHODS:-reinflow}; do
      name=manip-$task-$method-s$seed
      base=runs/manip-$task-base; [ $method = dppo ] && base=runs/manip-$task-base-ddpm
      if [ ! -e "runs/$name-eval.json" ]; then
        resume=""; [ -e runs/$name/config.yaml ] && resume="--resume"
        # robomimic settings of DPPO / ReinFlow: gamma 0.999; a layer-norm critic (without it V diverged on lift:
        # value loss 4 -> 3e10 in 50 iterations, RESULTS "Manipulation")
        $RLFT finetune algo=$method base=$base env=$task data.path=$store data.env=$task seed=$seed run.name=$name \
          train.iterations=$ITERATIONS train.n_envs=$N_ENVS train.n_steps=$N_STEPS train.checkpoint_every=5 \
          eval.every=10 eval.episodes=20 algo.gamma=0.999 algo.critic_layer_norm=true $resume
        $RLFT eval run=runs/$name n_episodes=100 n_envs=20 --json > "runs/$name-eval.json"
      fi
    done
  done
done
