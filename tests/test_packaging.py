import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_for_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rlft").rglob("__init__.py")}
    assert found | {"rlft.configs"} == listed


def test_no_top_level_datasets_module():
    assert not (ROOT / "datasets").exists() and not (ROOT / "datasets.py").exists()
