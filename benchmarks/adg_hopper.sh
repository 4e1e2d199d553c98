#!/usr/bin/env bash
# Corruption-robust offline RL on Hopper (issue 23's benchmark; ADG, Liu et al. 2025): offline learners on clean,
# corrupted and ADG-repaired data. Corruption as RIQL's (rate 0.3, scale 1.0, random): "obs" (states) and "all"
# (full element: states, actions, rewards). Data in runs/adg-data/: <source>-<corruption>.zarr.zip and its repair
# <source>-<corruption>-adg.zarr.zip (run folders runs/adg-repair-<source>-<corruption>, the published 20k steps
# per DDPM). One run at a time; a finished step is skipped, an interrupted one resumed (--resume is exact).
# Usage: bash benchmarks/adg_hopper.sh   Env: SOURCE (default hopper-v5-medium; a store made with
#   `rlft collect env=hopper datasets.kinds=[medium-replay]` works the same), CORRUPTIONS (default "obs all"),
#   METHODS (default "iql dql"), SEEDS (default "0 1"), STEPS (offline steps, default 100000), REPAIR_STEPS (default
#   20000), EVAL_EPISODES (default 10), CHECKPOINT_EVERY (default 5000).
# Prints, at the end, each run's final normalized score and each repair's detection precision / recall.
set -euo pipefail
export OMP_NUM_THREADS=1
RLFT=${RLFT:-rlft}
SOURCE=${SOURCE:-hopper-v5-medium}
STEPS=${STEPS:-100000}
name=$(basename "$SOURCE"); name=${name%.zip}; name=${name%.zarr}
mkdir -p runs/adg-data
datasets="clean:$SOURCE"
for c in ${CORRUPTIONS:-obs all}; do
  bad=runs/adg-data/$name-$c.zarr.zip; fixed=runs/adg-data/$name-$c-adg.zarr.zip
  [ -e $bad ] || $RLFT data corrupt "$SOURCE" --kind random --on $c --rate 0.3 --scale 1.0 --seed 0 --out $bad
  if [ ! -e $fixed ]; then
    resume=""; [ -e runs/adg-repair-$name-$c/config.yaml ] && resume="--resume"
    echo "$(date +%T) repair $bad (load $(cut -d' ' -f1-3 /proc/loadavg))"
    $RLFT data repair $bad --method adg --out $fixed run.name=adg-repair-$name-$c train.steps=${REPAIR_STEPS:-20000} $resume
  fi
  datasets="$datasets $c:$bad $c-adg:$fixed"
done
for seed in ${SEEDS:-0 1}; do
  for method in ${METHODS:-iql dql}; do
    for item in $datasets; do
      data=${item%%:*}; path=${item#*:}
      run=adg-$name-$data-$method-s$seed
      if [ -e runs/$run/metrics.jsonl ] && tail -1 runs/$run/metrics.jsonl | grep -q "\"step\": $STEPS,.*eval/normalized_score"; then continue; fi
      echo "$(date +%T) start $run (load $(cut -d' ' -f1-3 /proc/loadavg))"
      resume=""; [ -e runs/$run/config.yaml ] && resume="--resume"
      $RLFT offline algo=$method env=hopper data=hopper_medium data.path=$path run.name=$run train.steps=$STEPS seed=$seed \
        train.checkpoint_every=${CHECKPOINT_EVERY:-5000} eval.episodes=${EVAL_EPISODES:-10} $resume
    done
  done
done
${PYTHON:-python} - "$name" <<'EOF'
import glob, json, sys
name = sys.argv[1]
for path in sorted(glob.glob(f"runs/adg-{name}-*/metrics.jsonl")):
    rows = [json.loads(line) for line in open(path) if "eval/normalized_score" in line]
    if rows:
        print(f"{path.split('/')[1]:<48} step {rows[-1]['step']:>7}  normalized score {rows[-1]['eval/normalized_score']:6.1f}")
for path in sorted(glob.glob(f"runs/adg-data/{name}-*-adg.zarr.zip")):
    from rlft.datasets.store import EpisodeStore
    found = EpisodeStore(path).meta["repair"].get("detection", {})
    print(f"{path:<48} precision {found.get('precision')}, recall {found.get('recall')}, recall by element {found.get('recall_by_element')}")
EOF
