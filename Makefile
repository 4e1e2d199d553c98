# Two entry points, both self-contained on a fresh clone with Python 3.11:
#   make demo   install, then run the main pipeline (record data with the shipped experts, pretrain a flow
#               policy on it briefly, evaluate the shipped pretrained flow policy)
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
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/rlft info
	rm -rf runs/demo-hopper
	$(BIN)/rlft collect env=hopper run.name=demo-hopper expert.load=hopper-v5-expert expert.load_medium=hopper-v5-medium datasets.steps=20000
	$(BIN)/rlft data info runs/demo-hopper/data/hopper-v5-medium.zarr.zip
	rm -rf runs/demo-flow
	$(BIN)/rlft pretrain policy=flow_mlp data=hopper_medium data.path=runs/demo-hopper/data/hopper-v5-medium.zarr.zip run.name=demo-flow train.steps=3000 train.checkpoint_every=1000
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
