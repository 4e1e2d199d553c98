import subprocess
import sys

import pytest

from rlft.cli import main
from rlft.config import compose, groups
from rlft.errors import ConfigError


def test_compose_defaults_and_overrides():
    cfg = compose("collect", ["env=walker2d", "expert.steps=123", "datasets.kinds=[expert]"])
    assert cfg.env.id == "Walker2d-v5"
    assert cfg.expert.steps == 123
    assert list(cfg.datasets.kinds) == ["expert"]
    assert cfg.run.name == "collect-walker2d"  # interpolation resolved after the group choice
    assert cfg.choices.env == "walker2d"


@pytest.mark.parametrize(
    "override, words",
    [
        ("env=hoper", ["unknown option 'hoper'", "group 'env'", "hopper", "walker2d"]),
        ("expert.stepz=3", ["unknown config key 'expert.stepz'", "steps"]),
        ("nokey=3", ["unknown config key 'nokey'", "expert"]),
        ("expert.steps=many", ["expert.steps", "expected"]),
        ("justtext", ["group=option"]),
    ],
)
def test_bad_overrides_name_the_item_and_choices(override, words):
    with pytest.raises(ConfigError) as e:
        compose("collect", [override])
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_unknown_command_config():
    with pytest.raises(ConfigError, match="no config for command 'nope'"):
        compose("nope")


def test_groups_list_env_options():
    assert {"ant", "halfcheetah", "hopper", "walker2d"} <= set(groups()["env"])


def test_cli_error_is_one_line_with_status_2(capsys):
    assert main(["collect", "env=nothere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rlft: error: unknown option 'nothere'")
    assert "Traceback" not in err


def test_cli_unknown_key_subprocess_has_no_traceback():
    r = subprocess.run([sys.executable, "-m", "rlft.cli", "collect", "expert.nope=1"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "unknown config key 'expert.nope'" in r.stderr


@pytest.mark.parametrize("argv", [[], ["info"], ["data"], ["data", "import"], ["data", "info"], ["collect"]])
def test_help_on_every_subcommand(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: rlft" in capsys.readouterr().out


def test_info_lists_groups(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "env" in out and "hopper" in out and "walker2d" in out


def test_print_config_is_resolved(capsys):
    assert main(["collect", "env=ant", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "id: Ant-v5" in out and "name: collect-ant" in out and "${" not in out
