# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight for ``pytorch_backend_models``: the same rules the service applies when it
loads a model's metadata (torch_backend/models.py), checked on the controller before the
host is touched, so a model the service would refuse never makes a release."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
DATATYPES = ("FP32", "FP64", "INT32", "INT64")
KEYS = ("name", "file", "sha256", "inputs", "outputs")


def _whole(value):
    # isinstance, not type(): ansible-core 2.19 hands over tagged int subclasses
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor_problems(where, specs):
    if not isinstance(specs, list) or not specs:
        return ["%s must be a non-empty list" % where]
    problems, seen = [], set()
    for i, spec in enumerate(specs):
        at = "%s[%d]" % (where, i)
        if not isinstance(spec, dict):
            problems.append("%s must be a mapping with name, datatype and shape" % at)
            continue
        name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
        if not isinstance(name, str) or not name or "\n" in name:
            problems.append("%s.name must be a non-empty single-line string" % at)
        elif name in seen:
            problems.append("%s.name %r is repeated" % (at, name))
        else:
            seen.add(name)
        if datatype not in DATATYPES:
            problems.append("%s.datatype must be one of %s" % (at, ", ".join(DATATYPES)))
        if (not isinstance(shape, list) or not shape
                or not all(_whole(d) and (d == -1 or d >= 1) for d in shape)):
            problems.append("%s.shape must be a non-empty list of whole numbers >= 1 or -1" % at)
    return problems


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
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            problems.append("%s name must be lower-case letters, digits, '_', '.', '-', at most 128" % at)
        elif name == "conv2d-selftest":
            problems.append("%s may not be named conv2d-selftest (the built-in self-test)" % at)
        elif name in names:
            problems.append("%s name %r is repeated" % (at, name))
        else:
            names.add(name)
            at = "model %r" % name
        if "file" in model and (not isinstance(model["file"], str) or not model["file"].strip()
                                or "\n" in model["file"]):
            problems.append("%s file must be a path on the controller" % at)
        if "sha256" in model and (not isinstance(model["sha256"], str)
                                  or not SHA256_RE.fullmatch(model["sha256"])):
            problems.append("%s sha256 must be 64 lower-case hex digits" % at)
        for key in ("inputs", "outputs"):
            if key in model:
                problems.extend(_tensor_problems("%s %s" % (at, key), model[key]))
    return problems


class FilterModule:
    """pytorch_backend preflight filters."""

    def filters(self):
        return {"pytorch_backend_model_problems": model_problems}
