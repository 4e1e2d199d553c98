"""The ``rlft`` command: one entry point, one subcommand per job.

Jobs that train or record take config overrides (``group=option``, ``key.sub=value``) and write a run
folder; ``--resume`` continues the run named by ``run.name`` from its newest checkpoint. Every error
a user can fix prints one line ``rlft: error: ...`` and exits with status 2 (bad config or arguments)
or 1 (bad data or files).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from omegaconf import DictConfig

from rlft import __version__
from rlft.config import CONFIG_DIR, commands, compose, groups, to_yaml
from rlft.errors import CheckpointError, ConfigError, RlftError, StopRequested

OVERRIDE_HELP = "config overrides: group=option (see `rlft info`) or dotted key.sub=value"


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _add_config_command(sub: argparse._SubParsersAction, name: str, help: str, description: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=OVERRIDE_HELP)
    p.add_argument("--resume", action="store_true", help="continue the run folder runs/<run.name> from its newest checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    return p


def _add_tool_command(
    sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], help: str, description: str, json_flag: bool = True
) -> None:
    """A subcommand that takes config overrides, ``--print-config`` and (``json_flag``) ``--json``, and writes no run folder."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=OVERRIDE_HELP)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    p.set_defaults(func=func)


DATA_PARALLEL = ("pretrain",)  # the commands that run data-parallel under torchrun (rlft/runtime/distributed.py)


def _start_run(
    command: str, args: argparse.Namespace, validate: Callable[[DictConfig], None] | None = None, may_change: tuple[str, ...] = ()
) -> tuple[DictConfig, Any] | None:
    """Compose the config, check it, open the run folder; None when only printing the config.

    ``may_change``: top-level config keys that a ``--resume`` may change (see :meth:`Run.start`).
    """
    from rlft.runtime.distributed import join
    from rlft.runtime.run import Run
    from rlft.runtime.seeding import set_threads

    cfg = compose(command, args.overrides)
    if validate is not None:
        validate(cfg)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return None
    set_threads(cfg.threads)
    world = join(cfg.device) if command in DATA_PARALLEL else None
    if world is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"rlft {command} runs in one process; torchrun runs rlft {' and '.join(DATA_PARALLEL)}")
    return cfg, Run.start(cfg, resume=args.resume, may_change=may_change, **({"world": world} if world else {}))


# ---- info ------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from rlft.algos.registry import ALGOS, COMMAND_KIND
    from rlft.paths import DATASETS_DIR

    info = {
        "version": __version__,
        "config_dir": str(CONFIG_DIR),
        "commands": commands(),
        "algorithms": {name: {"kind": spec.kind, "summary": spec.summary} for name, spec in ALGOS.items()},
        "groups": groups(),
        "shipped_datasets": sorted(p.name.removesuffix(".zarr.zip") for p in DATASETS_DIR.glob("*.zarr.zip")) if DATASETS_DIR.is_dir() else [],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"rlft {info['version']}  (configs: {info['config_dir']})")
    print(f"commands with configs: {', '.join(info['commands'])}")
    print("algorithms (algo=<name>):")
    for command, kind in COMMAND_KIND.items():
        for name in sorted(n for n, a in info["algorithms"].items() if a["kind"] == kind):
            print(f"  {command:<9} {name:<9} {info['algorithms'][name]['summary']}")
    print("config groups (choose with group=option):")
    for g, opts in info["groups"].items():
        print(f"  {g:<10} {', '.join(opts)}")
    print(f"shipped datasets: {', '.join(info['shipped_datasets']) or 'none'}")
    return 0


# ---- data ------------------------------------------------------------------------------------
def cmd_data_import(args: argparse.Namespace) -> int:
    from rlft.datasets.readers import import_dataset
    from rlft.io import refuse_overwrite

    refuse_overwrite(args.out, args.force, "--force")
    store = import_dataset(args.src, args.format, args.out)
    s = store.summary()
    print(json.dumps({"path": s["path"], "episodes": s["episodes"], "steps": s["steps"], "keys": s["keys"]}))
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from rlft.datasets.readers.lerobot import write_lerobot
    from rlft.datasets.store import EpisodeStore
    from rlft.io import refuse_overwrite

    refuse_overwrite(args.out, args.force, "--force")
    print(json.dumps(write_lerobot(EpisodeStore(args.src), args.out, fps=args.fps, version=args.version)))
    return 0


def cmd_data_merge(args: argparse.Namespace) -> int:
    from rlft.datasets.store import merge_stores
    from rlft.io import refuse_overwrite

    refuse_overwrite(args.out, args.force, "--force")
    s = merge_stores(args.srcs, args.out).summary()
    print(json.dumps({"path": s["path"], "episodes": s["episodes"], "steps": s["steps"], "return_mean": round(s["return"]["mean"], 1)}))
    return 0


def cmd_data_filter(args: argparse.Namespace) -> int:
    from rlft.datasets.store import EpisodeStore, filter_store
    from rlft.io import refuse_overwrite

    refuse_overwrite(args.out, args.force, "--force")
    source = EpisodeStore(args.src)
    s = filter_store(source.path, args.out, args.max_cost).summary()
    print(json.dumps({"path": s["path"], "episodes": s["episodes"], "of": source.n_episodes, "steps": s["steps"], "cost_max": s["cost"]["max"]}))
    return 0


def cmd_data_corrupt(args: argparse.Namespace) -> int:
    from rlft.datasets.corrupt import RECORD, corrupt_store, state_keys
    from rlft.datasets.store import EpisodeStore
    from rlft.io import refuse_overwrite

    refuse_overwrite(args.out, args.force, "--force")
    adversary = None
    if args.critic is not None and args.kind == "adversarial":
        from rlft.algos.attack import critic_adversary

        store = EpisodeStore(args.src)
        adversary = critic_adversary(args.critic, store, state_keys(store))
    elif args.critic is not None:
        raise ConfigError(f"--critic is the Q that --kind adversarial attacks with; --kind {args.kind} takes none")
    critic = str(args.critic) if args.critic is not None else None
    store = corrupt_store(args.src, args.out, args.kind, args.on, args.rate, args.scale, args.seed, adversary, args.pgd_steps, critic)
    record = store.meta[RECORD]
    summary = {"path": str(store.path), "steps": store.n_steps} | {k: record[k] for k in ("kind", "on", "rate", "scale", "seed")}
    print(json.dumps(summary | {"corrupted": {element: len(rows) for element, rows in record["rows"].items()}}))
    return 0


def _yaml_text(text: str) -> str:
    """``text`` as a YAML string literal, so that an override keeps it a string whatever it holds."""
    return "'" + text.replace("'", "''") + "'"


def cmd_data_repair(args: argparse.Namespace) -> int:
    """``rlft data repair SRC --method adg --out OUT``: a run folder of the ``repair`` config, then the repaired store."""
    from pathlib import Path

    from rlft.algos.adg import check, repair
    from rlft.io import refuse_overwrite

    stem = Path(args.src).name.removesuffix(".zip").removesuffix(".zarr")
    given = [f"src={_yaml_text(args.src)}", f"out={_yaml_text(args.out)}", f"force={str(args.force).lower()}", f"method={args.method}"]
    args.overrides = [*given, f"run.name={_yaml_text(f'repair-{args.method}-{stem}')}", *args.overrides]

    def validate(cfg: DictConfig) -> None:
        check(cfg)
        refuse_overwrite(cfg.out, cfg.force, "--force")

    started = _start_run("repair", args, validate, may_change=("out", "force"))
    if started is None:
        return 0
    print(json.dumps(repair(*started)))
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from rlft.datasets.store import EpisodeStore

    store = EpisodeStore(args.path)
    if args.verify:
        store.verify()
    s = store.summary() | ({"verified": True} if args.verify else {})
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"{s['path']}: {s['episodes']} episodes, {s['steps']} steps")
    for k, shape in s["keys"].items():
        print(f"  {k:<24} {s['dtypes'][k]:<8} {tuple(shape)}")
    if "return" in s:
        r = s["return"]
        print(f"  return: mean {r['mean']:.1f}  std {r['std']:.1f}  min {r['min']:.1f}  max {r['max']:.1f}")
    if "cost" in s:
        c = s["cost"]
        print(f"  episode cost: mean {c['mean']:.1f}  std {c['std']:.1f}  min {c['min']:.1f}  max {c['max']:.1f}")
    if "ref_returns" in s:
        print(f"  reference returns (normalized score 0 / 100): {s['ref_returns']['random']:.1f} / {s['ref_returns']['expert']:.1f}")
    if "corruption" in s:
        c = s["corruption"]
        rows = ", ".join(f"{n} {e}" for e, n in c["rows"].items())
        settings = "".join(f", {k} {c[k]:g}" for k in ("rate", "scale", "seed") if isinstance(c.get(k), (int, float)))
        print(f"  corruption: {c.get('kind')} on {c.get('on')}{settings} (rows: {rows})")
    if "repair" in s:
        r, found = s["repair"], s["repair"].get("detection")
        scores = f"; precision {found['precision']:.3f}, recall {found['recall']:.3f}" if found and found["recall"] is not None else ""
        print(f"  repair: {r['method']}, {r['rows']} steps flagged{scores}")
    if args.verify:
        print("  checksums: every array verified")
    return 0


# ---- collect ---------------------------------------------------------------------------------
def cmd_collect(args: argparse.Namespace) -> int:
    from rlft.algos.expert import collect, dataset_kinds, dataset_path, validate
    from rlft.io import refuse_overwrite

    # Recording runs after training, so --resume may re-record with other dataset settings.
    def check(cfg: DictConfig) -> None:
        validate(cfg)
        if os.path.exists(cfg.out) and not os.path.isdir(cfg.out):
            raise ConfigError(f"out={cfg.out}: a file, not a folder; datasets are written into the folder out")
        if not args.resume:  # a resumed run re-records its own datasets on purpose
            for kind in dataset_kinds(cfg):
                refuse_overwrite(dataset_path(cfg, kind), cfg.force, "force=true")

    started = _start_run("collect", args, check, may_change=("datasets", "demos", "out", "force"))
    if started is None:
        return 0
    cfg, run = started
    command = " ".join(["rlft collect", *args.overrides, *(["--resume"] if args.resume else [])])
    for kind, store in collect(cfg, run, command).items():
        s = store.summary()
        print(json.dumps({"dataset": kind, "path": s["path"], "episodes": s["episodes"], "steps": s["steps"], "return_mean": round(s["return"]["mean"], 1)}))
    return 0


# ---- pretrain, finetune, offline -----------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    """``rlft pretrain | finetune | offline``: the registry's algorithm of that kind trains one run."""
    from rlft.algos.registry import COMMAND_KIND, entry_point, get
    from rlft.runtime.plots import LEARNING_CURVE

    kind = COMMAND_KIND[args.command]

    def check(cfg: DictConfig) -> None:
        get(cfg.algo.name if "algo" in cfg else "bc", kind).checker()(cfg)

    # Evaluation reads the trained weights only, so a resumed run may evaluate differently.
    started = _start_run(args.command, args, check, may_change=("eval",))
    if started is None:
        return 0
    cfg, run = started
    entry_point(get(cfg.algo.name if "algo" in cfg else "bc").train)(cfg, run)
    summary = {"plot": str(run.folder / LEARNING_CURVE)} if kind == "online" else {"steps": cfg.train.steps}
    if run.world.main:
        print(json.dumps({"run": str(run.folder), **summary}))
    return 0


# ---- eval -----------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    cfg = compose("eval", args.overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    if not cfg.run:
        raise ConfigError("eval needs the run folder: rlft eval run=runs/<name> (or a shipped policy's name)")
    if cfg.weights not in ("auto", "ema", "policy"):
        raise ConfigError(f"weights={cfg.weights}: choose auto, ema or policy")
    if cfg.sampler not in ("default", "deterministic"):
        raise ConfigError(f"sampler={cfg.sampler}: choose default or deterministic")
    if args.video:
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before MuJoCo renders

    import torch

    from rlft.algos.registry import LoadOptions, load_acting_policy
    from rlft.export.exporter import ExportedPolicy, is_exported
    from rlft.runtime.checkpoint import is_shipped, read_spec, resolve_policy
    from rlft.runtime.evaluate import env_cost_limit, evaluate
    from rlft.runtime.seeding import set_threads

    set_threads(cfg.threads)
    folder = resolve_policy(cfg.run)
    if is_exported(folder):  # an exported controller folder (or its graph file)
        if cfg.checkpoint:
            raise ConfigError(f"checkpoint={cfg.checkpoint}: {folder} is an exported controller, which holds one set of weights; evaluate the run folder")
        policy = ExportedPolicy(folder, threads=cfg.threads)
        if any(v is not None for v in cfg.select.values()):
            raise ConfigError(f"select.*: {folder} is an exported controller, which acts as exported; evaluate the run folder to change its Q selection")
        if cfg.steps not in (None, policy.steps):
            raise ConfigError(f"steps={cfg.steps}: {folder} was exported with {policy.steps} sampling steps; export again with steps={cfg.steps}")
        meta, folder = policy.controller.meta["source"].get("meta", {}), policy.controller.folder
    else:
        meta = read_spec(folder).get("meta", {})
        checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else None
        options = LoadOptions(cfg.weights, cfg.select.candidates, cfg.select.rule)
        policy = load_acting_policy(folder, checkpoint, options).to(torch.device(cfg.device))
    if not meta.get("env"):
        raise CheckpointError(f"{folder} does not record the env it acts in (meta.env of its policy.json); train it again with rlft pretrain env=<name>")
    refs = (meta["ref_returns"]["random"], meta["ref_returns"]["expert"]) if meta.get("ref_returns") else None
    # videos go into the run folder; a shipped policy's go to ./videos (the package stays untouched)
    video_dir = Path("videos") / folder.name if is_shipped(folder) else folder / "videos"
    video = video_dir / f"eval-seed{cfg.seed}.mp4" if args.video else None
    result = evaluate(
        policy,
        meta["env"],
        cfg.n_episodes,
        cfg.seed,
        backend=cfg.backend,
        steps=cfg.steps,
        n_envs=cfg.n_envs,
        refs=refs,
        video=video,
        stochastic=False if cfg.sampler == "deterministic" else None,
        cost_limit=cfg.cost_limit if cfg.cost_limit is not None else env_cost_limit(meta["env"]),
    )
    result = {"run": str(folder), "env": meta["env"], "steps": cfg.steps or policy.default_steps, **result}
    from rlft.algos.offline import QSelect

    if isinstance(policy, QSelect):  # an offline run's Q selection
        result["select"] = {"candidates": policy.candidates, "rule": policy.rule}
    elif isinstance(policy, ExportedPolicy) and "select" in policy.controller.meta:  # exported with it
        result["select"] = policy.controller.meta["select"]
    if args.json:
        print(json.dumps(result))
    else:
        score = f", normalized score {result['normalized_score']:.1f}" if result["normalized_score"] is not None else ""
        video_note = f"; video: {result['video']}" if "video" in result else ""
        select = f" (Q selection among {result['select']['candidates']}, {result['select']['rule']})" if "select" in result else ""
        cost = ""
        if "cost_mean" in result:
            verdict = "safe" if result["safe"] else "unsafe"
            cost = f", cost {result['cost_mean']:.1f} (normalized {result['normalized_cost']:.2f} at limit {result['cost_limit']:g}: {verdict})"
        success = f", success rate {result['success_rate']:.2f}" if result.get("success_rate") is not None else ""
        print(
            f"{folder}: return {result['return_mean']:.1f} +- {result['return_std']:.1f} over {result['episodes']} episodes"
            f"{select}{score}{success}{cost}{video_note}"
        )
    return 0


def _run_tool(command: str, args: argparse.Namespace, job: Callable[[DictConfig], dict], summary: Callable[[dict], str] | None = None) -> int:
    """Compose ``command``'s config and print ``job(cfg)``: one JSON object, or ``summary`` of it without ``--json``."""
    from rlft.runtime.seeding import set_threads

    cfg = compose(command, args.overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    set_threads(cfg.threads)
    result = job(cfg)
    print(json.dumps(result) if summary is None or args.json else summary(result))
    return 0


# ---- plot -----------------------------------------------------------------------------------
def cmd_plot(args: argparse.Namespace) -> int:
    from rlft.runtime.plots import plot_runs

    curves = plot_runs(args.runs, args.out, args.metric, args.x)
    result = {
        "out": args.out,
        "x": args.x,
        "curves": [
            {
                "label": c.label,
                "runs": [str(r) for r in c.runs],
                "metric": c.metric,
                "last": {args.x: float(c.x[-1]), "mean": float(c.mean[-1]), "min": float(c.low[-1]), "max": float(c.high[-1])},
            }
            for c in curves
        ],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.out}: {len(curves)} curve{'s' if len(curves) != 1 else ''} against {args.x}")
    for c in result["curves"]:
        last = c["last"]
        seeds = f" ({len(c['runs'])} seeds: {', '.join(os.path.basename(r) for r in c['runs'])})" if len(c["runs"]) > 1 else ""
        spread = f" (min {last['min']:.4g}, max {last['max']:.4g})" if len(c["runs"]) > 1 else ""
        print(f"  {c['label']}{seeds}: {c['metric']} {last['mean']:.4g}{spread} at {args.x} {last[args.x]:.4g}")
    return 0


# ---- export ---------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from rlft.export.exporter import export_run

    return _run_tool("export", args, export_run)


# ---- bench ----------------------------------------------------------------------------------
def cmd_bench_rollout(args: argparse.Namespace) -> int:
    from rlft.envs.bench import bench_rollout, summary_line

    return _run_tool("bench", args, bench_rollout, summary_line)


def cmd_bench_finetune(args: argparse.Namespace) -> int:
    """``rlft bench finetune``: the finetune config (train.n_steps 50 unless given), one timed iteration."""
    from rlft.algos.online import check
    from rlft.algos.onpolicy.bench import bench_finetune, summary_lines
    from rlft.algos.registry import get
    from rlft.runtime.seeding import set_threads

    overrides = list(args.overrides)
    if not any(o.startswith("train.n_steps=") for o in overrides):
        overrides.insert(0, "train.n_steps=50")
    cfg = compose("finetune", overrides)
    if get(cfg.algo.name, "online").provider is None:
        raise ConfigError(f"algo={cfg.algo.name}: rlft bench finetune times chain PPO (dppo, reinflow, resip)")
    check(cfg)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    set_threads(cfg.threads)
    result = bench_finetune(cfg)
    print(json.dumps(result) if args.json else summary_lines(result))
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from rlft.export.latency import bench_latency, summary_lines

    return _run_tool("bench_latency", args, bench_latency, summary_lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlft", description="Train diffusion and flow policies from demonstrations and fine-tune them with RL.")
    parser.add_argument("--version", action="version", version=f"rlft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser(
        "info",
        help="list config groups and their options, and shipped datasets",
        description="List every config group with its options, the commands that take configs, and the shipped datasets.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "data",
        help="import, export, inspect, filter, corrupt and repair trajectory datasets",
        description="Import datasets into rlft's zarr episode store, export them, inspect them, filter them, corrupt them (RIQL) and repair them (ADG).",
    )
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION", parser_class=_Parser)
    q = data_sub.add_parser(
        "import",
        help="import a dataset into the native store",
        description="Read SRC in the given format and write a native episode store to OUT (.zarr directory or .zarr.zip file).",
    )
    q.add_argument("src", help="source file or folder")
    q.add_argument(
        "--format",
        required=True,
        choices=["d4rl", "minari", "robomimic", "npz", "lerobot"],
        help="d4rl HDF5, Minari dataset folder, robomimic/LIBERO HDF5, DPPO npz, LeRobot dataset folder (v2.0, v2.1, v3.0)",
    )
    q.add_argument("--out", required=True, help="output store path (*.zarr or *.zarr.zip)")
    q.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    q.set_defaults(func=cmd_data_import)
    q = data_sub.add_parser(
        "export",
        help="write a native store in another format (a LeRobot dataset)",
        description="Write the store SRC as a LeRobot dataset folder OUT: parquet frames, image keys as mp4 videos, meta/ (info, episodes, tasks, stats).",
    )
    q.add_argument("src", help="store path, or the name of a shipped dataset (e.g. hopper-v5-medium)")
    q.add_argument("--format", required=True, choices=["lerobot"], help="LeRobot dataset folder")
    q.add_argument("--out", required=True, help="output dataset folder")
    q.add_argument("--fps", type=int, help="frames per second (default: the rate the store was imported with)")
    q.add_argument("--version", default="v3.0", choices=["v3.0", "v2.1"], help="LeRobot codebase version of the layout (default: v3.0)")
    q.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    q.set_defaults(func=cmd_data_export)
    q = data_sub.add_parser(
        "merge",
        help="concatenate stores into one (e.g. medium + expert)",
        description="Write the episodes of every SRC, in order, into a new store OUT (same keys; same reference returns).",
    )
    q.add_argument("srcs", nargs="+", metavar="SRC", help="store paths or shipped dataset names")
    q.add_argument("--out", required=True, help="output store path (*.zarr or *.zarr.zip)")
    q.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    q.set_defaults(func=cmd_data_merge)
    q = data_sub.add_parser(
        "filter",
        help="keep the episodes whose cost is within a limit (safe data)",
        description="Write the episodes of SRC whose summed cost is at most --max-cost into a new store OUT (e.g. the data of BC-safe).",
    )
    q.add_argument("src", help="store path of a safety task (with a 'cost' key)")
    q.add_argument("--max-cost", type=float, required=True, help="largest episode cost kept (e.g. the cost limit, 10)")
    q.add_argument("--out", required=True, help="output store path (*.zarr or *.zarr.zip)")
    q.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    q.set_defaults(func=cmd_data_filter)
    q = data_sub.add_parser(
        "corrupt",
        help="corrupt a fraction of the transitions (RIQL's protocol)",
        description="Write a copy of SRC to OUT with a fraction --rate of its transitions corrupted, as RIQL does:\n"
        "random: x + U[-scale, scale] x std per dimension (rewards: U[-30 scale, 30 scale]); adversarial: the same box,\n"
        "searched by 100 projected gradient steps to lower the Q of --critic (rewards: -scale x r). dynamics corrupts\n"
        "next observations (the observation of step t + 1); all: obs, action and reward. The corrupted rows are\n"
        "recorded in OUT's metadata ('corruption') to measure detection; training never reads them.\n\n"
        "example: rlft data corrupt hopper-v5-medium --kind random --on obs --rate 0.3 --scale 1.0 --out obs30.zarr",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("src", help="store path or shipped dataset name (flat float state keys)")
    q.add_argument("--kind", required=True, choices=["random", "adversarial"], help="random noise or a gradient attack on --critic")
    q.add_argument("--on", required=True, choices=["obs", "action", "reward", "dynamics", "all"], help="the element corrupted")
    q.add_argument("--rate", type=float, default=0.3, help="fraction of transitions corrupted, per element (default 0.3)")
    q.add_argument("--scale", type=float, default=1.0, help="corruption range in stds (default 1.0)")
    q.add_argument("--seed", type=int, default=0, help="the draw of transitions and noise (default 0)")
    q.add_argument("--critic", help="with --kind adversarial: the run folder of an iql, dql or ofql run whose Q is attacked")
    q.add_argument("--pgd-steps", type=int, default=100, help="with --kind adversarial: projected gradient steps (default 100, RIQL's)")
    q.add_argument("--out", required=True, help="output store path (*.zarr or *.zarr.zip)")
    q.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    q.set_defaults(func=cmd_data_corrupt)
    q = data_sub.add_parser(
        "repair",
        help="detect and repair corrupted steps with ADG (two DDPMs)",
        description="ADG: train an ambient DDPM on windows of 11 steps of (s, a, r) at noise levels k >= 30 of 100, flag\n"
        "the steps whose rescaled noise score exceeds 0.2, train a second DDPM with those masked out, and write OUT\n"
        "with each flagged step replaced by the centre of its window noised to level 30 and denoised. Training\n"
        "runs in runs/<run.name> (default repair-adg-<SRC name>); --resume continues it. Settings and overrides as\n"
        "in configs/repair.yaml. Prints one JSON object, with detection precision and recall when SRC records its\n"
        "corruption (rlft data corrupt).\n\n"
        "example: rlft data repair obs30.zarr --method adg --out obs30-adg.zarr train.steps=20000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("src", help="store path or shipped dataset name (flat float state keys)")
    q.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="config overrides (configs/repair.yaml): key.sub=value")
    q.add_argument("--method", required=True, choices=["adg"], help="the recovery method")
    q.add_argument("--out", required=True, help="output store path (*.zarr or *.zarr.zip)")
    q.add_argument("--force", action="store_true", help="replace OUT if it exists (default: refuse)")
    q.add_argument("--resume", action="store_true", help="continue the run folder runs/<run.name> from its newest checkpoint")
    q.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    q.set_defaults(func=cmd_data_repair)
    q = data_sub.add_parser(
        "info", help="summarise a native store", description="Print episodes, steps, keys (per-step shapes), returns and reference returns of a store."
    )
    q.add_argument("path", help="store path, or the name of a shipped dataset (e.g. hopper-v5-medium)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--verify", action="store_true", help="read every array and compare it with the checksum stored at writing (exit 1 if one differs)")
    q.set_defaults(func=cmd_data_info)

    p = _add_config_command(
        sub,
        "collect",
        "train (or load) an SB3 expert and record datasets",
        "Train a stable-baselines3 SAC expert (or load one with expert.load=...) and record D4RL-style\n"
        "expert and medium datasets into runs/<run.name>/data.\n\nexample: rlft collect env=walker2d expert.steps=400000",
    )
    p.set_defaults(func=cmd_collect)

    p = _add_config_command(
        sub,
        "pretrain",
        "train a diffusion or flow policy by behaviour cloning",
        "Train a generative policy (policy=<preset>) on a dataset (data=<name>) by behaviour cloning with\n"
        "EMA weights; evaluate it in the env at the end (eval.episodes, 0 = skip).\n\n"
        "example: rlft pretrain policy=flow_mlp env=hopper data=hopper_medium train.steps=20000",
    )
    p.set_defaults(func=cmd_train)

    p = _add_config_command(
        sub,
        "finetune",
        "fine-tune a pretrained policy with online RL (DPPO, ReinFlow, ResiP, DSRL, DSRL-NA)",
        "Fine-tune a pretrained policy in its env: algo=dppo (diffusion policies) or algo=reinflow (flow\n"
        "policies), PPO over the sampling chain; algo=resip (PPO on a residual) or algo=dsrl / dsrl_na (SAC\n"
        "over the initial noise) keep any base policy frozen. base=<policy> picks the start (default: the\n"
        "shipped policy pretrained on data=<name> with the algo's preset).\n\n"
        "example: rlft finetune algo=reinflow env=hopper train.iterations=50",
    )
    p.set_defaults(func=cmd_train)

    p = _add_config_command(
        sub,
        "offline",
        "offline RL from a dataset with a learned critic (DQL, OFQL, IQL)",
        "Train a generative actor with a learned critic on a fixed dataset: algo=dql (diffusion, backprop\n"
        "through the chain), algo=ofql (one-step mean flow) or algo=iql (expectile V, advantage-weighted\n"
        "actor); evaluate what the run acts with in the env at the end (eval.episodes, 0 = skip).\n\n"
        "example: rlft offline algo=ofql data=hopper_medium train.steps=20000",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a trained policy in its env",
        description="Run the policy of a run folder in its env (batched) and summarise returns, normalized score,\n"
        "success rate and speed. Overrides as in configs/eval.yaml.\n\n"
        "example: rlft eval run=runs/pretrain-diffusion_mlp-hopper n_episodes=20 steps=10 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=OVERRIDE_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--video", action="store_true", help="also write an mp4 of the first sub-env's first episode into <run>/videos/")
    p.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "plot",
        help="curves of several runs on one figure, seeds averaged",
        description="Plot one metric of several run folders against step (or env steps, or wall time) on one\n"
        "figure. Runs whose folder names differ only by a trailing seed suffix (-<N>, _<N>, -s<N>, _s<N>,\n"
        "-seed<N>, _seed<N>: hopper-s0, hopper-s1) are seeds of one setting: their mean is a line, their\n"
        "min-max range a band, where all of them logged (interpolated between logged points); any other run\n"
        "is a line of its own. The default metric is each setting's return: the first of eval/return_mean,\n"
        "expert/eval_return, train/return_mean that its runs log. OUT is replaced if it exists.\n\n"
        "example: rlft plot runs/reinflow-s0 runs/reinflow-s1 runs/dppo --x env_steps --out compare.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (runs/<name>)")
    p.add_argument("--metric", help="the metric to plot (a key of metrics.jsonl, e.g. eval/normalized_score); default: the return")
    p.add_argument("--x", default="step", choices=["step", "env_steps", "time_s"], help="x axis (default: step)")
    p.add_argument("--out", default="plot.png", help="the figure file, .png, .pdf or .svg (default: plot.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plot)

    _add_tool_command(
        sub,
        "export",
        cmd_export,
        "export a policy as an ONNX or TorchScript controller",
        "Export the deterministic sampler of a run folder, policy folder or shipped policy (K steps unrolled,\n"
        "normalization inside, initial noise an input, dynamic batch) with controller.json beside it, after\n"
        "checking it against PyTorch on random inputs (max abs diff <= 1e-4); prints one JSON object.\n"
        "Overrides as in configs/export.yaml.\n\n"
        "example: rlft export run=hopper-v5-medium-meanflow_mlp format=onnx steps=1",
        json_flag=False,
    )

    p = sub.add_parser("bench", help="speed benchmarks", description="Measure how fast parts of rlft run on this machine.")
    bench_sub = p.add_subparsers(dest="bench_command", required=True, metavar="WHAT", parser_class=_Parser)
    _add_tool_command(
        bench_sub,
        "rollout",
        cmd_bench_rollout,
        "batched env steps/s and the raw physics rate",
        "Step a batched env with uniform-random actions and report env steps/s next to the raw batched\n"
        "mj_step rate of the same model and frame skip (configs/bench.yaml).\n\n"
        "example: rlft bench rollout env=hopper backend=native n_envs=64 --json",
    )
    _add_tool_command(
        bench_sub,
        "finetune",
        cmd_bench_finetune,
        "one chain-PPO iteration timed by phase, with its compute floor",
        "Time one iteration of DPPO, ReinFlow or ResiP (after an untimed one) by phase: physics, policy and\n"
        "critic in the rollout; old log-probs, forward, optimizer and backward in the update; and the update's\n"
        "compute floor (FLOPs per sample-gradient x sample-gradients / the measured matmul rate). Overrides as\n"
        "for rlft finetune (configs/finetune.yaml); train.n_steps is 50 unless given.\n\n"
        "example: rlft bench finetune algo=dppo env=hopper --json",
    )
    _add_tool_command(
        bench_sub,
        "latency",
        cmd_bench_latency,
        "per-chunk latency in PyTorch, TorchScript and ONNX Runtime",
        "Export a policy to TorchScript and ONNX (temporary folder) and time one action chunk at batch 1\n"
        "in PyTorch eager, TorchScript and ONNX Runtime: median and p99 (configs/bench_latency.yaml).\n\n"
        "example: rlft bench latency run=hopper-v5-medium-meanflow_mlp --json",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides after an option (rlft data repair SRC --out OUT key=value) are overrides too
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except RlftError as e:
        print(f"rlft: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a missing file, a permission, a full disk, a path through a file: the OS's words and the path
        where = f": {e.filename}" if e.filename else ""
        print(f"rlft: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except StopRequested as e:
        print(f"rlft: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("rlft: interrupted; continue from the last checkpoint with the same command and --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
