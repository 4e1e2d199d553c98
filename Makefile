# Two entry points, both self-contained on a fresh clone with Python 3.11:
#   make demo   install, then the main job end to end: on PointMass record a poor scripted demonstrator,
#               pretrain a flow policy, fine-tune it with ReinFlow, print before / after and plot the curve;
#               on Hopper record data with the shipped experts and evaluate the shipped pretrained policy
#   make test   install, then run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# One torch thread: on a 2-core machine whose other core is busy, 2 threads ran 60x slower.
export OMP_NUM_THREADS ?= 1

.PHONY: demo test install install-all install-safety

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, from the CPU build; the constraint keeps any later resolution from replacing it.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test,robosuite]"
	$(BIN)/pip install -q --no-deps robosuite==1.5.2  # see the robosuite extra in pyproject.toml: its mink pins numpy<2
	touch $@

install: $(VENV)/.installed

# The demo's fine-tuning settings: ReinFlow tuned for a 25-iteration run on the toy (a short rollout, high
# constant learning rates), as tests/test_onpolicy.py uses them.
DEMO_FT = train.n_envs=16 train.n_steps=25 train.iterations=25 train.checkpoint_every=5 eval.episodes=100 \
	algo.actor_lr=0.001 algo.actor_min_lr=0.001 algo.critic_lr=0.003 algo.critic_min_lr=0.003 algo.clip=0.2 algo.batch_size=100
DEMO_POLICY = policy.backbone.hidden=64 policy.horizon=2 policy.act_steps=2

demo: install
	$(BIN)/rlft info
	@echo "== 1. PointMass: record a poor scripted demonstrator, pretrain a flow policy on it, fine-tune it with ReinFlow"
	rm -rf runs/demo-pointmass runs/demo-pointmass-flow runs/demo-pointmass-reinflow
	$(BIN)/rlft collect env=pointmass expert.scripted=curling "datasets.kinds=[scripted]" datasets.steps=5000 run.name=demo-pointmass
	$(BIN)/rlft pretrain policy=flow_mlp env=pointmass data.path=runs/demo-pointmass/data/pointmass-v0-curling.zarr.zip data.env=pointmass \
		$(DEMO_POLICY) train.steps=1500 train.warmup=50 train.checkpoint_every=500 ema.start=200 eval.episodes=0 run.name=demo-pointmass-flow
	$(BIN)/rlft finetune algo=reinflow base=runs/demo-pointmass-flow env=pointmass $(DEMO_FT) run.name=demo-pointmass-reinflow
	@echo "== before fine-tuning (the pretrained policy) and after (ReinFlow), the same 100 start states:"
	$(BIN)/rlft eval run=runs/demo-pointmass-flow n_episodes=100 n_envs=100
	$(BIN)/rlft eval run=runs/demo-pointmass-reinflow n_episodes=100 n_envs=100
	$(BIN)/rlft plot runs/demo-pointmass-reinflow --out runs/demo-pointmass-reinflow.png
	@echo "== 2. Hopper: record data with the shipped SB3 experts, evaluate the shipped pretrained flow policy"
	rm -rf runs/demo-hopper
	$(BIN)/rlft collect env=hopper run.name=demo-hopper expert.load=hopper-v5-expert expert.load_medium=hopper-v5-medium datasets.steps=20000
	$(BIN)/rlft data info runs/demo-hopper/data/hopper-v5-medium.zarr.zip
	$(BIN)/rlft eval run=hopper-v5-medium-flow_mlp n_episodes=20 n_envs=20

test: install
	$(BIN)/python -m pytest

# Every optional part in the same venv (robosuite + LIBERO, safety tasks, GPU physics).
# constraints-all.txt holds one tested resolution of all of them (numpy 1.26, as robosuite needs).
install-all: install
	$(BIN)/pip install -q -c constraints.txt -c constraints-all.txt -e ".[all]"
	$(BIN)/pip install -q --no-deps bullet-safety-gym==1.4.0

# bullet-safety-gym 1.4.0 declares gymnasium~=0.28 but runs on gymnasium 1.x: install it without deps.
install-safety: install
	$(BIN)/pip install -q -c constraints.txt -e ".[safety]"
	$(BIN)/pip install -q --no-deps bullet-safety-gym==1.4.0
