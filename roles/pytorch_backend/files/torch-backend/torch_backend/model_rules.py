"""The rules a model's name and metadata must follow: defined once, for two users.

* the service (models.py), which refuses to start on a model that breaks them;
* the role's controller-side preflight (roles/pytorch_backend/filter_plugins/model_specs.py),
  which loads this file by path, so that a model the service would refuse never makes
  a release.

Each function returns the problems it finds as sentences (empty: none); the service
raises on the first, the preflight reports them all. Standard library only, no
import from the package: the preflight runs this file on the controller, outside it.
"""

import re

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# The protocol's numeric datatypes. BYTES (strings) is not one: a TorchScript model
# takes tensors, so no model may declare it and a request sending it gets a 400.
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "BF16", "FP32", "FP64")
# The built-in self-test model's name (selftest.py takes it from here): no other model
# may have it.
SELFTEST_MODEL = "conv2d-selftest"


def name_problems(name):
    """A model name: lower-case letters, digits, '_', '.', '-', starting with a letter or
    a digit, at most 128 characters (it names files and URL paths), not the built-in's."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return ["name must be lower-case letters, digits, '_', '.', '-', at most 128"]
    if name == SELFTEST_MODEL:
        return ["name %s is reserved for the built-in self-test model" % name]
    return []


def sha256_problems(value):
    """A checksum: 64 lower-case hex digits, as sha256sum and hashlib write it."""
    if isinstance(value, str) and SHA256_RE.fullmatch(value):
        return []
    return ["sha256 must be 64 lower-case hex digits"]


def _whole(value):
    # isinstance, not type(): ansible-core 2.19 hands over tagged int subclasses
    return isinstance(value, int) and not isinstance(value, bool)


def tensor_problems(where, specs):
    """A model's inputs or outputs: a non-empty list of {name, datatype, shape}, names
    unique, single-line and non-empty, shape whole numbers >= 1 or -1 (any size).
    Each problem starts with `where` (e.g. "metadata inputs")."""
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
