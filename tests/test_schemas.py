"""Typed configs (rlft/schemas.py): every shipped config composes, values take their field's type, and
each rule refuses a bad value with one line naming the dotted key (checked at composition: nothing trains)."""

import shutil
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from rlft.algos.registry import ALGOS, COMMAND_KIND, entry_point, get
from rlft.cli import main
from rlft.config import CONFIG_DIR, commands, compose, groups
from rlft.errors import ConfigError


def _cases() -> list[tuple[str, list[str]]]:
    """(command, [group=option]) for every command and every option of the groups it uses."""
    cases = []
    for command in commands():
        used = OmegaConf.load(CONFIG_DIR / f"{command}.yaml").get("defaults") or {}
        cases.append((command, []))
        for group in used:
            cases += [(command, [f"{group}={o}"]) for o in groups()[group] if group != "algo" or get(o).kind == COMMAND_KIND[command]]
    return cases


@pytest.mark.parametrize("command, overrides", _cases())
def test_every_shipped_config_composes(command, overrides):
    cfg = compose(command, overrides)
    assert OmegaConf.is_struct(cfg) and "${" not in OmegaConf.to_yaml(cfg)


def test_the_cases_cover_every_group_option():
    covered = {tuple(o[0].split("=")) for _, o in _cases() if o}
    assert covered == {(g, o) for g, opts in groups().items() for o in opts}


def test_every_algorithm_with_a_config_has_its_schema():
    for name in groups()["algo"]:
        assert get(name).config is not None and OmegaConf.structured(entry_point(get(name).config))
    assert all(spec.config is None for spec in ALGOS.values() if spec.kind == "pretrain")


@pytest.mark.parametrize(
    "command, override, key, value",
    [
        ("pretrain", "train.lr=3e-4", "train.lr", 0.0003),  # YAML 1.1 reads 3e-4 as a string
        ("finetune", "algo.actor_lr=1e-4", "algo.actor_lr", 0.0001),
        ("offline", "algo.gamma=1", "algo.gamma", 1.0),
        ("pretrain", "run.name=1e3", "run.name", "1e3"),  # a str field keeps a number-like name as typed
        ("eval", "steps=null", "steps", None),
    ],
)
def test_values_take_their_field_type(command, override, key, value):
    got = OmegaConf.select(compose(command, [override]), key)
    assert got == value and type(got) is type(value)


RULES = [  # (argv, the dotted key its error names)
    # sizes > 0
    (["pretrain", "train.steps=0"], "train.steps"),
    (["offline", "train.batch_size=0"], "train.batch_size"),
    (["finetune", "train.iterations=0"], "train.iterations"),
    (["finetune", "train.n_envs=0"], "train.n_envs"),
    (["finetune", "train.n_steps=-1"], "train.n_steps"),
    (["pretrain", "policy.horizon=0"], "policy.horizon"),
    (["pretrain", "policy.obs_horizon=0"], "policy.obs_horizon"),
    (["offline", "algo.critic.hidden=0"], "algo.critic.hidden"),
    (["offline", "algo.select.candidates=0"], "algo.select.candidates"),
    (["finetune", "algo=dsrl", "algo.buffer_size=0"], "algo.buffer_size"),
    (["finetune", "algo=dsrl_na", "algo.distill_steps=0"], "algo.distill_steps"),
    (["finetune", "algo=resip", "algo.residual.depth=0"], "algo.residual.depth"),
    (["finetune", "algo=reinflow", "algo.noise_hidden=[64,0]"], "algo.noise_hidden"),
    (["collect", "datasets.n_envs=0"], "datasets.n_envs"),
    (["eval", "n_episodes=0"], "n_episodes"),
    (["eval", "steps=0"], "steps"),
    (["export", "parity_batch=0"], "parity_batch"),
    (["bench", "rollout", "threads=0"], "threads"),
    (["bench", "latency", "repeats=0"], "repeats"),
    # 1 <= act_steps <= horizon
    (["pretrain", "policy.act_steps=5"], "policy.act_steps"),
    (["pretrain", "policy.act_steps=0"], "policy.act_steps"),
    (["offline", "algo.policy.act_steps=2"], "algo.policy.act_steps"),
    # learning rates finite and > 0; floors finite, >= 0 and <= the rate
    (["pretrain", "train.lr=0"], "train.lr"),
    (["finetune", "algo.actor_lr=-1e-4"], "algo.actor_lr"),
    (["finetune", "algo=dppo", "algo.critic_lr=.inf"], "algo.critic_lr"),
    (["offline", "algo.lr=.nan"], "algo.lr"),
    (["collect", "expert.learning_rate=0"], "expert.learning_rate"),
    (["pretrain", "train.min_lr=-1"], "train.min_lr"),
    (["finetune", "algo.actor_min_lr=0.1"], "algo.actor_min_lr"),
    # logging and checkpoint periods
    (["pretrain", "train.checkpoint_every=150"], "train.checkpoint_every"),
    (["offline", "train.log_every=0"], "train.log_every"),
    (["finetune", "train.checkpoint_every=0"], "train.checkpoint_every"),
    # evaluation
    (["pretrain", "eval.episodes=-1"], "eval.episodes"),
    (["offline", "eval.every=-1"], "eval.every"),
    (["finetune", "eval.every=0"], "eval.every"),
    # devices
    (["pretrain", "device=gpu"], "device"),
    (["eval", "device=cuda:x"], "device"),
    (["bench", "rollout", "device=tpu"], "device"),
    # run folders
    (["pretrain", "run.name="], "run.name"),
    (["offline", "run.name=a/b"], "run.name"),
    (["collect", "run.keep_checkpoints=-1"], "run.keep_checkpoints"),
    (["offline", "algo.name=ofql"], "algo.name"),  # the registry dispatches by this name
    (["eval", "select.candidates=0"], "select.candidates"),
    (["offline", "algo=iql", "algo.expectile=1.5"], "algo.expectile"),
    (["offline", "algo=iql", "algo.temperature=-1"], "algo.temperature"),
    # probabilities, discounts and rates in [0, 1]
    (["finetune", "algo.gamma=1.5"], "algo.gamma"),
    (["finetune", "algo=dppo", "algo.gae_lambda=-0.1"], "algo.gae_lambda"),
    (["offline", "algo.tau=2"], "algo.tau"),
    (["pretrain", "ema.decay=1.1"], "ema.decay"),
    (["offline", "algo=ofql", "algo.ema.decay=-0.5"], "algo.ema.decay"),
    (["finetune", "algo.noise_hold=1.2"], "algo.noise_hold"),
    (["collect", "expert.gamma=1.01"], "expert.gamma"),
    (["collect", "datasets.medium_fraction=2"], "datasets.medium_fraction"),
    # orderings
    (["finetune", "algo.min_std=0.3"], "algo.min_std"),
    (["finetune", "algo.noise_hold=0.8"], "algo.noise_hold"),
    (["finetune", "algo=dppo", "algo.ft_steps=21"], "algo.ft_steps"),
    (["finetune", "algo=dppo", "algo.logprob_clamp=[2.0,-5.0]"], "algo.logprob_clamp"),
    (["bench", "rollout", "env.d4rl_ref.random=5000"], "env.d4rl_ref.random"),
    # coefficients and counts where 0 is off
    (["finetune", "algo=dppo", "algo.reg_coef=-1"], "algo.reg_coef"),
    (["offline", "algo.grad_clip=-1"], "algo.grad_clip"),
    (["bench", "rollout", "warmup=-1"], "warmup"),
    # option maps name their type
    (["pretrain", "policy.head.type=transformer"], "policy.head.type"),
    (["pretrain", "policy.backbone.type=3"], "policy.backbone.type"),
    # a value of another type
    (["finetune", "train.n_envs=many"], "train.n_envs"),
    (["pretrain", "train.lr=fast"], "train.lr"),
    (["pretrain", "train.steps=null"], "train.steps"),
    (["collect", "expert.net_arch=3"], "expert.net_arch"),
    (["eval", "n_episodes=1.5"], "n_episodes"),
]


@pytest.mark.parametrize("argv, key", RULES, ids=[" ".join(argv) for argv, _ in RULES])
def test_a_broken_rule_is_one_line_naming_the_key(argv, key, capsys):
    assert main([*argv, "--print-config"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and err.startswith(f"rlft: error: {key}="), err
    assert captured.out == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["offline", "algo=dsrl"], "algo=dsrl is not an offline algorithm"),  # dsrl's command_defaults would fail on train.n_envs
        (["offline", "algo=dppo"], "algo=dppo is not an offline algorithm"),
        (["finetune", "algo=dql"], "algo=dql is not an online algorithm"),
    ],
)
def test_an_algorithm_of_another_kind_fails_first(argv, message, capsys):
    assert main([*argv, "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"rlft: error: {message}; choose algo="), err


@pytest.mark.parametrize(
    "old, new, words",
    [
        ("n_envs: 64", "n_envs: lots", ["n_envs='lots': expected an integer"]),
        ("physics_threads: null", "physics_threads: many", ["physics_threads='many': expected an integer or null"]),
        ("seed: 0", "seed: 0\nsurprise: 1", ["unknown config key 'surprise'", "BenchConfig"]),
        ("seed: 0", "", ["seed: no value"]),
    ],
)
def test_a_yaml_that_disagrees_with_the_schema_is_refused(tmp_path, old, new, words):
    shutil.copytree(CONFIG_DIR / "env", tmp_path / "env")
    text = (CONFIG_DIR / "bench.yaml").read_text()
    assert text.count(old) == 1
    (tmp_path / "bench.yaml").write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as e:
        compose("bench", config_dir=tmp_path)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_composition_imports_no_torch_and_no_algorithm():
    code = "import sys; from rlft.config import compose; [compose(c) for c in ('pretrain', 'finetune', 'offline')]; "
    code += "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('rlft.algos.') and m != 'rlft.algos.registry'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
