"""Config composition: a command's base YAML + chosen group options + dotted overrides.

``configs/<command>.yaml`` is the base of a command. Its ``defaults`` mapping names one option for each
config group it uses (``env: hopper``); the option file ``configs/<group>/<option>.yaml`` is placed under
the key ``<group>``. Command-line overrides are ``group=option`` (pick another file) and
``dotted.key=value`` (change a value that exists). Anything unknown is a :class:`ConfigError` whose
message names the bad item and the valid choices. OmegaConf interpolations (``${env.id}``) are allowed;
no resolver evaluates code.

The resolved config is then typed and checked once against the command's schema in :mod:`rlft.schemas`,
its ``algo`` section against the chosen algorithm's (``AlgoSpec.config`` in :mod:`rlft.algos.registry`):
values take their field's type (``train.lr=3e-4`` is the float 0.0003), and a value of the wrong type or
out of range is a one-line :class:`ConfigError` naming the dotted key, the value and the rule.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Iterable, Union, get_args, get_origin, get_type_hints

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from rlft.algos.registry import COMMAND_KIND, entry_point, get
from rlft.errors import ConfigError
from rlft.paths import CONFIG_DIR
from rlft.schemas import COMMANDS, show


def groups(config_dir: Path = CONFIG_DIR) -> dict[str, list[str]]:
    """Every config group and its options, sorted: ``{"env": ["ant", "halfcheetah", ...], ...}``."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(config_dir.iterdir()) if d.is_dir() and not d.name.startswith((".", "_"))}


def commands(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Commands with a base config (``configs/<command>.yaml``)."""
    return sorted(p.stem for p in config_dir.glob("*.yaml"))


def _load_yaml(path: Path) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml errors carry multi-line messages
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: must hold a mapping at the top level")
    return cfg


def _choices(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))


def _suggest(name: str, items: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(items), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


_MISSING = object()
_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list", dict: "a mapping"}


def _describe(tp: Any) -> str:
    """A field type in words: ``Optional[int]`` -> "an integer or null"."""
    if get_origin(tp) is Union:
        return " or ".join(_describe(a) if a is not type(None) else "null" for a in get_args(tp))
    tp = get_origin(tp) or tp
    return "a mapping" if dataclasses.is_dataclass(tp) else _KINDS.get(tp, getattr(tp, "__name__", str(tp)))


def _check_rules(node: DictConfig, prefix: str = "") -> None:
    """Build the dataclasses of ``node`` (``OmegaConf.to_object`` runs every ``__post_init__``); a failed rule's
    message gets the dotted path of the section whose rule it is (``n_envs=0: ...`` -> ``train.n_envs=0: ...``)."""
    try:
        OmegaConf.to_object(node)
    except ConfigError as e:
        for key, child in node.items():
            if isinstance(child, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(child)):
                _check_rules(child, f"{prefix}{key}.")  # raises with the longer path if the rule is in there
        raise ConfigError(f"{prefix}{e}") from None


def _validate(cfg: DictConfig, command: str, algo_schema: str | None) -> DictConfig:
    """``cfg`` typed by the schema of ``command`` (``algo``: by ``algo_schema``, ``"module:Class"``) and checked by its rules."""
    if command not in COMMANDS:
        raise ConfigError(f"rlft.schemas has no schema for command '{command}'; schemas: {_choices(COMMANDS)}")
    schema = OmegaConf.structured(COMMANDS[command])
    if algo_schema is not None:
        schema.algo = OmegaConf.structured(entry_point(algo_schema))
    try:
        typed = OmegaConf.merge(schema, cfg)
        _check_rules(typed)
    except ConfigKeyError as e:
        raise ConfigError(f"unknown config key '{e.full_key}': its typed config {OmegaConf.get_type(e.parent_node).__name__} has no such field") from None
    except MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key}: no value; the config must set it") from None
    except OmegaConfBaseException as e:  # a value that does not convert to its field's type
        owner = OmegaConf.get_type(e.parent_node) if e.parent_node is not None else None
        hints = get_type_hints(owner) if dataclasses.is_dataclass(owner) else {}
        rule = f"expected {_describe(hints[e.key])}" if e.key in hints else str(e.msg).splitlines()[0]
        raise ConfigError(f"{e.full_key}={show(e.value)}: {rule}") from None
    return OmegaConf.create(OmegaConf.to_container(typed))


def _flatten(section: DictConfig, prefix: str = "") -> list[tuple[str, Any]]:
    """A nested section -> [(dotted key, leaf value)]."""
    items: list[tuple[str, Any]] = []
    for key, value in section.items():
        items += _flatten(value, f"{prefix}{key}.") if isinstance(value, DictConfig) else [(f"{prefix}{key}", value)]
    return items


def compose(command: str, overrides: Iterable[str] = (), config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Build the config of ``command`` with ``overrides`` applied; raises :class:`ConfigError`."""
    base_path = config_dir / f"{command}.yaml"
    if not base_path.is_file():
        raise ConfigError(f"no config for command '{command}'; commands with configs: {_choices(commands(config_dir))}")
    base = _load_yaml(base_path)
    chosen: dict[str, str] = dict(base.pop("defaults", None) or {})
    all_groups = groups(config_dir)

    values: list[tuple[str, Any]] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"'{item}': overrides look like group=option or key.sub=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"'{item}': the key before '=' is empty")
        if "." not in key and key in all_groups:
            if text not in all_groups[key]:
                raise ConfigError(f"unknown option '{text}' for group '{key}'{_suggest(text, all_groups[key])}; choose one of: {_choices(all_groups[key])}")
            chosen[key] = text
        else:
            values.append((key, _parse_value(text)))

    for group, option in chosen.items():
        if group not in all_groups:
            raise ConfigError(f"{base_path.name}: unknown group '{group}'; groups: {_choices(all_groups)}")
        if option not in all_groups[group]:
            raise ConfigError(f"{base_path.name}: unknown option '{option}' for group '{group}'; choose one of: {_choices(all_groups[group])}")
    # an algorithm of another kind fails here, with the registry's message, before its YAML is merged
    algo_schema = get(chosen["algo"], COMMAND_KIND.get(command)).config if "algo" in chosen else None
    options = {g: _load_yaml(config_dir / g / f"{o}.yaml") for g, o in chosen.items()}
    # an option may set values of the command's own config (algo=dsrl: train.n_envs), below the overrides
    sets = [(f"{g}/{chosen[g]}.yaml", opt.pop("command_defaults")) for g, opt in options.items() if "command_defaults" in opt]
    cfg = OmegaConf.merge(*(OmegaConf.create({g: opt}) for g, opt in options.items()), base)
    for source, section in sets:
        for key, value in _flatten(section):
            if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
                raise ConfigError(f"{source}: command_defaults sets '{key}', which {base_path.name} does not have")
            OmegaConf.update(cfg, key, value, merge=False)
    cfg.choices = chosen

    for key, value in values:
        parts = key.split(".")
        node: Any = cfg
        for depth, part in enumerate(parts):
            here = ".".join(parts[: depth + 1])
            if not isinstance(node, DictConfig) or part not in node:
                valid = list(node.keys()) if isinstance(node, DictConfig) else []
                where = ".".join(parts[:depth]) or "the top level"
                hint = _suggest(part, valid) + (f"; keys under {where}: {_choices(map(str, valid))}" if valid else "")
                if depth == 0 and part in all_groups:
                    hint = f"; '{part}' is a group: choose with {part}=<option>"
                raise ConfigError(f"unknown config key '{here}'{hint}")
            if depth < len(parts) - 1:
                node = node[part]
        node[parts[-1]] = value

    try:
        OmegaConf.resolve(cfg)
    except Exception as e:
        raise ConfigError(f"config interpolation failed: {str(e).splitlines()[0]}") from None
    cfg = _validate(cfg, command, algo_schema)
    if "algo" in chosen and cfg.algo.name != chosen["algo"]:  # the registry dispatches by algo.name
        raise ConfigError(
            f"algo.name={cfg.algo.name}: the name of configs/algo/{chosen['algo']}.yaml stays '{chosen['algo']}'; choose another with algo=<name>"
        )
    OmegaConf.set_struct(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    """The fully resolved config as YAML text."""
    return OmegaConf.to_yaml(cfg, resolve=True)
