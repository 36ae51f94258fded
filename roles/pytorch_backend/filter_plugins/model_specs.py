# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Preflight for ``pytorch_backend_models``: the rules the service applies when it loads a
model's name and metadata, checked on the controller before the host is touched, so a model
the service would refuse never makes a release.

The rules are the service's own: torch_backend/model_rules.py of the package this role
deploys (files/torch-backend/), loaded by path. Only what concerns the controller is
added here: every key present, ``file`` a path, ``sha256`` required (the service takes
models without one)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

KEYS = ("name", "file", "sha256", "inputs", "outputs")

# filter_plugins/ is no package (Ansible loads each file here by path, under a name of its own):
# the shared loader beside this file is loaded by path as well
_spec = importlib.util.spec_from_file_location("pytorch_backend_service_rules",
                                               Path(__file__).with_name("service_rules.py"))
service_rules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(service_rules)

rules = service_rules.load("model_rules.py", "pytorch_backend_model_rules")


def model_problems(models):
    """Every problem with the models list, one sentence each; [] when it is fine."""
    if not isinstance(models, list):
        return ["must be a list of models"]
    problems, names = [], set()
    for i, model in enumerate(models):
        at = "model %d" % i
        if not isinstance(model, dict):
            problems.append("%s must be a mapping with %s" % (at, ", ".join(KEYS)))
            continue
        missing = [key for key in KEYS if key not in model]
        if missing:
            problems.append("%s lacks %s" % (at, ", ".join(missing)))
        name = model.get("name")
        name_problems = rules.name_problems(name)
        if name_problems:
            problems.extend("%s %s" % (at, p) for p in name_problems)
        elif name in names:
            problems.append("%s name %r is repeated" % (at, name))
        else:
            names.add(name)
            at = "model %r" % name
        if "file" in model and (not isinstance(model["file"], str) or not model["file"].strip()
                                or "\n" in model["file"]):
            problems.append("%s file must be a path on the controller" % at)
        if "sha256" in model:
            problems.extend("%s %s" % (at, p) for p in rules.sha256_problems(model["sha256"]))
        for key in ("inputs", "outputs"):
            if key in model:
                problems.extend(rules.tensor_problems("%s %s" % (at, key), model[key]))
    return problems


class FilterModule:
    """pytorch_backend preflight filters."""

    def filters(self):
        return {"pytorch_backend_model_problems": model_problems}
