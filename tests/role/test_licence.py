"""One licence: Apache-2.0 in LICENSE, in the role's Galaxy metadata and in every source header.

Reads every file git tracks (the same set a clone or `ansible-galaxy role install` gets), so a file
copied in from elsewhere with another licence's header fails here.
"""
import re
import subprocess

import yaml

from conftest import ROOT, ROLE

SPDX = "SPDX-License-" + "Identifier:"  # split so that this file is not a header itself
# Words that only another licence's header or notice would carry.
OTHER = re.compile("|".join([r"\bL?GPL", r"General Public License", r"\bMIT License", r"\bBSD[- ]\d",
                             r"Mozilla Public License", r"\bMPL-2", r"\bAGPL", r"\bISC License"]))
# The files that Ansible loads as plugins or modules: each carries the header, as Ansible's own do.
HEADED = ["roles/pytorch_backend/library/*.py", "roles/pytorch_backend/module_utils/nnpack_*.py",
          "roles/pytorch_backend/filter_plugins/*.py", "plugins/callback/*.py"]


def tracked():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in filter(None, out.stdout.split("\0")):
        path = ROOT / name
        if name == "LICENSE" or not path.is_file():
            continue
        try:
            yield name, path.read_text()
        except UnicodeDecodeError:
            continue


def test_license_file_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_galaxy_metadata_and_service_package_say_apache_2():
    assert yaml.safe_load((ROLE / "meta" / "main.yml").read_text())["galaxy_info"]["license"] == "Apache-2.0"
    pyproject = (ROLE / "files" / "torch-backend" / "pyproject.toml").read_text()
    assert re.search(r'^license = "Apache-2\.0"$', pyproject, re.M), pyproject


def test_no_file_carries_another_licence():
    files = dict(tracked())
    assert len(files) > 100, "git ls-files found too little: %d files" % len(files)
    wrong = []
    for name, text in files.items():
        if name == "tests/role/test_licence.py":
            continue
        for number, line in enumerate(text.splitlines(), 1):
            named = re.findall(re.escape(SPDX) + r"\s*([^\s`'\"]+)", line)
            if OTHER.search(line) or any(licence != "Apache-2.0" for licence in named):
                wrong.append("%s:%d: %s" % (name, number, line.strip()))
    assert not wrong, "another licence than Apache-2.0:\n" + "\n".join(wrong)


def test_plugins_and_modules_carry_the_apache_header():
    paths = sorted(p for pattern in HEADED for p in ROOT.glob(pattern))
    assert len(paths) >= 9
    for path in paths:
        head = "\n".join(path.read_text().splitlines()[:8])
        assert SPDX + " Apache-2.0" in head, path
        assert "Copyright: (c) 2026, torch-backend contributors" in head, path
