"""Config composition: a command's base YAML + chosen group options + dotted overrides.

``configs/<command>.yaml`` is the base of a command. Its ``defaults`` mapping names one option for each
config group it uses (``env: hopper``); the option file ``configs/<group>/<option>.yaml`` is placed under
the key ``<group>``. Command-line overrides are ``group=option`` (pick another file) and
``dotted.key=value`` (change a value that exists). Anything unknown is a :class:`ConfigError` whose
message names the bad item and the valid choices. OmegaConf interpolations (``${env.id}``) are allowed;
no resolver evaluates code.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from rlft.errors import ConfigError
from rlft.paths import CONFIG_DIR


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


def _check_type(key: str, old: Any, new: Any) -> None:
    """Refuse a value whose kind differs from the default's (a string where a number belongs)."""
    if old is None or new is None:
        return
    number = (int, float)
    if isinstance(old, bool) or isinstance(new, bool):
        ok = isinstance(old, bool) and isinstance(new, bool)
    elif isinstance(old, number):
        ok = isinstance(new, number) and not (isinstance(old, int) and isinstance(new, float) and not new.is_integer())
    elif isinstance(old, str):
        ok = isinstance(new, (str, int, float))
    elif isinstance(old, (dict, DictConfig)):
        ok = isinstance(new, dict)
    elif isinstance(old, (list, ListConfig)):
        ok = isinstance(new, list)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{key}={new!r}: expected a value like the default {old!r} ({type(old).__name__})")


_MISSING = object()


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
        _check_type(key, node[parts[-1]], value)
        node[parts[-1]] = value

    try:
        OmegaConf.resolve(cfg)
    except Exception as e:
        raise ConfigError(f"config interpolation failed: {str(e).splitlines()[0]}") from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    """The fully resolved config as YAML text."""
    return OmegaConf.to_yaml(cfg, resolve=True)
