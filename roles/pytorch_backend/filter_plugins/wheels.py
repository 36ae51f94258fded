# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Which requirements a wheelhouse cannot serve to a host's Python, told on the controller before
anything on the host changes: pip would otherwise fail after apt and the venv already ran."""

from __future__ import annotations

import re


def _canonical(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def _fits(filename, python):
    """Whether the wheel `filename` installs on CPython `python` ("X.Y"), by its Python and ABI
    tags: py3 / pyXY (pure Python), cpXY, or a stable-ABI (abi3) wheel for cp3Y, Y no newer."""
    parts = filename[:-len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return False
    major, minor = (int(n) for n in python.split("."))
    tags, abi = parts[-3].split("."), parts[-2]
    for tag in tags:
        if tag in (f"py{major}", f"py{major}{minor}", f"cp{major}{minor}"):
            return True
        found = re.fullmatch(rf"cp{major}(\d+)", tag)
        if abi == "abi3" and found and int(found.group(1)) <= minor:
            return True
    return False


def wheels_lacking(wheels, requirements, python):
    """The `requirements` (pip requirement strings, as written) with no wheel among `wheels` (file
    names) of their name, and of their version when pinned with ==, that installs on Python
    `python` ("X.Y"), in the order given."""
    lacking = []
    for requirement in requirements:
        found = re.match(r"([A-Za-z0-9][A-Za-z0-9_.-]*)(?:\[[^\]]*\])?(?:==([^\s;,]+))?", requirement)
        name, version = _canonical(found.group(1)), found.group(2)
        if not any(_canonical(wheel.split("-", 2)[0]) == name and _fits(wheel, python)
                   # a pinned version, whatever local label (+cpu) the wheel carries
                   and (version is None or wheel.split("-", 2)[1].split("+")[0] == version.split("+")[0])
                   for wheel in wheels):
            lacking.append(found.group(0))
    return lacking


class FilterModule:
    def filters(self):
        return {"pytorch_backend_wheels_lacking": wheels_lacking}
