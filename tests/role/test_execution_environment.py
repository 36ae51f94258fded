"""execution-environment.yml: the controller as an AWX / ansible-navigator image, in step with this controller.

Runs the real `ansible-builder create` (it writes the build context; building the image needs
podman or docker and the network, which this test does not use) and reads what it wrote.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT

BIN = Path(sys.executable).parent
EE = ROOT / "execution-environment.yml"


def pin(name):
    """The exact version requirements/controller.txt pins for `name`."""
    for line in (ROOT / "requirements" / "controller.txt").read_text().splitlines():
        m = re.match(r"^%s==(\S+)$" % re.escape(name), line.strip())
        if m:
            return m.group(1)
    raise AssertionError("%s is not pinned in requirements/controller.txt" % name)


def test_builder_creates_the_context_with_the_controllers_ansible_core_and_collections(tmp_path):
    assert pin("ansible-builder") == subprocess.run([str(BIN / "ansible-builder"), "--version"], capture_output=True,
                                                    text=True, check=True).stdout.strip()
    context = tmp_path / "context"
    proc = subprocess.run([str(BIN / "ansible-builder"), "create", "-f", str(EE), "-c", str(context),
                           "--output-filename", "Containerfile"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    containerfile = (context / "Containerfile").read_text()
    base = yaml.safe_load(EE.read_text())["images"]["base_image"]["name"]
    assert f'ARG EE_BASE_IMAGE="{base}"' in containerfile
    refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="([^"]*)"$', containerfile, re.M).group(1).split()
    assert "ansible-core==%s" % pin("ansible-core") in refs, refs
    assert any(ref.startswith("ansible-runner==") for ref in refs), refs
    assert 'ARG PYCMD="/usr/bin/python3.11"' in containerfile  # the controller's Python
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in containerfile
    # the collections file in the context is the project's requirements.yml, pins and all
    built = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert built == yaml.safe_load((ROOT / "requirements.yml").read_text())
    assert {c["name"]: c["version"] for c in built["collections"]}.get("community.digitalocean")
    assert "openssh-clients" in (context / "_build" / "bindep.txt").read_text()


def test_controller_side_code_needs_no_python_package_beyond_ansible_core():
    """Why the EE lists no Python packages: what runs on the controller imports only the stdlib and ansible."""
    files = sorted([*ROOT.glob("plugins/*/*.py"), *ROOT.glob("roles/*/filter_plugins/*.py"),
                    ROOT / "roles/pytorch_backend/files/torch-backend/torch_backend/model_rules.py"])
    assert len(files) >= 4
    allowed = set(sys.stdlib_module_names) | {"ansible", "jinja2", "yaml"}  # jinja2, PyYAML: ansible-core's own
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                assert name.split(".")[0] in allowed, "%s imports %s: add it to execution-environment.yml" % (path, name)
