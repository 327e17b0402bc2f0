"""The version has one source (Cargo.toml) and every way of asking for it gives the same answer."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import iqk_rs
import pytest
from iqk_rs.cli import app
from typer.testing import CliRunner

REPO = Path(__file__).parent.parent


def test_version_option_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"iqk {iqk_rs.__version__}\n"


@pytest.mark.skipif(
    not (REPO / "Cargo.toml").exists(), reason="needs the source tree (Cargo.toml, pyproject.toml)"
)
def test_version_comes_from_cargo_toml_only():
    cargo_version = re.search(
        r'^\[package\][^\[]*?^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M | re.S
    )
    assert cargo_version is not None
    assert iqk_rs.__version__ == cargo_version.group(1)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \[[^\]]*"version"', pyproject, re.M)
    assert not re.search(r"^version\s*=", pyproject, re.M), "a second version in pyproject.toml"


def test_installed_metadata_has_the_same_version():
    try:
        dist = importlib.metadata.distribution("iqk-rs")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("iqk-rs is imported from a source tree, not installed")
    installed_init = Path(dist.locate_file("iqk_rs/__init__.py")).resolve()
    if installed_init != Path(iqk_rs.__file__).resolve():
        pytest.skip("the imported iqk_rs is not the installed distribution")
    assert dist.version == iqk_rs.__version__
