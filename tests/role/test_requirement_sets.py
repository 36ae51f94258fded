"""Every requirement set of the role resolves, for its Python and platform, from the package
index's metadata, without downloading a wheel: what a deploy in index mode would install.

The platforms' Python and glibc versions are the distributions' own (Debian 12: 3.11 and
2.36, Debian 13: 3.13 and 2.41, Ubuntu 22.04: 3.10 and 2.35, Ubuntu 24.04: 3.12 and 2.39).
torch is checked against PyPI's file list for its version (a manylinux x86-64 wheel for that
Python, and Requires-Python): the CPU index the role installs it from
(download.pytorch.org/whl/cpu) cannot be reached here, it publishes the same Python matrix,
and resolving torch through pip would fetch PyPI's CUDA wheel to read its metadata. The rest
of each set is resolved by `pip install --dry-run --report` with its dependencies, and torch's
own dependencies are checked against the set's pins with the metadata of the controller's torch
(the same release, its CPU build).
"""
import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest
import yaml
from importlib import metadata

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename

from conftest import ROLE

INDEX = "https://pypi.org/simple"
PLATFORMS = {"debian12": ("3.11", 36), "debian13": ("3.13", 41), "ubuntu2204": ("3.10", 35),
             "ubuntu2404": ("3.12", 39)}
SETS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["pytorch_backend_requirement_sets"]


def test_every_set_has_a_platform_and_every_platform_a_set():
    assert sorted(SETS) == sorted(python for python, _ in PLATFORMS.values())


def manylinux_tags(glibc_minor):
    return [f"manylinux_2_{minor}_x86_64" for minor in range(glibc_minor, 16, -1)] + [
        "manylinux2014_x86_64", "linux_x86_64"]


def split_torch(requirements):
    torch = [r for r in requirements if re.match(r"(?i)^torch==", r)]
    assert len(torch) == 1, f"the set pins torch exactly: {requirements}"
    return torch[0].split("==", 1)[1], [r for r in requirements if r not in torch]


@pytest.fixture(scope="module")
def torch_files():
    request = urllib.request.Request(f"{INDEX}/torch/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)["files"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_torch_of_the_set_has_a_linux_wheel_for_the_platforms_python(torch_files, platform):
    python, glibc = PLATFORMS[platform]
    version, _ = split_torch(SETS[python])
    tag = "cp" + python.replace(".", "")
    platforms = set(manylinux_tags(glibc))
    fitting = []
    for entry in torch_files:
        name, ver, _, tags = parse_wheel_filename(entry["filename"]) if entry["filename"].endswith(".whl") else (None,) * 4
        if name != "torch" or str(ver) != version:
            continue
        if any(t.interpreter == tag and t.abi == tag and t.platform in platforms for t in tags):
            assert python + ".0" in SpecifierSet(entry.get("requires-python") or ""), entry
            fitting.append(entry["filename"])
    assert fitting, f"no torch {version} wheel for {tag} on manylinux x86-64 (glibc 2.{glibc})"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_rest_of_the_set_resolves_for_the_platforms_python(tmp_path, platform):
    python, glibc = PLATFORMS[platform]
    _, rest = split_torch(SETS[python])
    report = tmp_path / "report.json"
    # no pip configuration: this machine's find-links and constraints are not a host's index
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    platform_args = [arg for tag in manylinux_tags(glibc) for arg in ("--platform", tag)]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), "--only-binary=:all:",
         "--python-version", python, "--implementation", "cp", *platform_args,
         "--target", str(tmp_path / "target"), "--index-url", INDEX, *rest],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
                 for item in json.loads(report.read_text())["install"]}
    pinned = {canonicalize_name(r.split("==")[0]): r.split("==")[1] for r in rest}
    # exactly the pins: nothing unpinned pulled in, every pin at its version
    assert installed == pinned


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_set_pins_every_dependency_of_its_torch(platform):
    python, _ = PLATFORMS[platform]
    version, rest = split_torch(SETS[python])
    assert metadata.version("torch").split("+")[0] == version, "the controller's torch is another release"
    pins = {canonicalize_name(r.split("==")[0]): r.split("==")[1] for r in rest}
    needed = [Requirement(r) for r in metadata.requires("torch")]
    needed = [r for r in needed if r.marker is None or r.marker.evaluate({"python_version": python, "extra": ""})]
    assert needed, "torch names no dependencies?"
    for requirement in needed:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"torch needs {requirement}, which the {python} set does not pin"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"torch needs {requirement}, the {python} set pins {pins[name]}")


def test_a_set_that_does_not_fit_its_python_fails_to_resolve(tmp_path):
    """The check above can fail: numpy 2.4.6 (Requires-Python >= 3.11) on Ubuntu 22.04's 3.10."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--only-binary=:all:", "--python-version", "3.10",
         "--implementation", "cp", "--platform", "manylinux_2_17_x86_64", "--target", str(tmp_path / "t"),
         "--index-url", INDEX, "numpy==2.4.6"],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "numpy==2.4.6" in proc.stderr, proc.stderr[-2000:]
