"""The package lists agree: pyproject.toml (ranges), environment.yml (conda), constraints.txt (pins)."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def environment_requirements() -> dict[str, Requirement]:
    """Package specs from environment.yml's conda and pip lists (python, pip and ninja are tooling)."""
    specs = []
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("\ndependencies:\n", 1)[1].splitlines():
        match = re.match(r"^\s+- ([A-Za-z0-9_.\-]+.*)$", line)
        if match and not match.group(1).startswith("pip:"):
            specs.append(match.group(1).strip())
    requirements = {canonicalize_name(r.name): r for r in map(Requirement, specs)}
    for tooling in ("python", "pip", "ninja"):
        requirements.pop(tooling, None)
    return requirements


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_environment_yml_lists_the_same_packages_and_ranges_as_pyproject():
    ours, conda = pyproject_requirements(), environment_requirements()
    assert sorted(conda) == sorted(ours)
    for name, requirement in ours.items():
        assert conda[name].specifier == requirement.specifier, name


def test_every_dependency_is_pinned_within_its_range():
    pins = constraint_pins()
    for name, requirement in pyproject_requirements().items():
        assert name in pins, f"{name} has no pin in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {requirement}"


@pytest.mark.parametrize("name, version", [("torch", "2.14.1"), ("torchvision", "0.29.1")])
def test_torch_pins_are_the_tested_pair(name, version):
    assert constraint_pins()[name] == version
