"""The CPU record: what a deploy decided for a CPU, and the one "same CPU?" rule.

The role writes it to ``/etc/torch-backend/cpu-record.json`` (``to_nice_json``), the
service reads it at start-up (``TORCH_BACKEND_CPU_RECORD``, see ``drift.py``)::

    {"fingerprint": "305b35c0b213a2bb", "cpu_model": "Intel Core i7 9xx (Nehalem Class Core i7)",
     "cpu_flags": {"avx": false, "avx2": false, "fma": false, "avx512f": false},
     "cpu_capability": "DEFAULT", "status": "unsupported_hardware", "available": false,
     "use_nnpack": "0"}

Used, from this one file, by the role's ``nnpack_facts`` module
(``roles/pytorch_backend/module_utils/cpu_record.py`` is a symlink to it, as for
``cpu_identity.py``: see there why the file lives in the service package) and by the
service's drift guard. So: standard library only, Python 3.8+, and no package-relative
imports (it is also loaded as ``ansible.module_utils.cpu_record``).

Changing what ``make_record`` writes changes the bytes of every host's record, and so
the configuration digest, and so restarts every service on the next deploy.
"""

from __future__ import annotations

import json

# the flags a record keeps: the ones NNPACK's x86-64 requirements and torch's capability turn on
RECORD_FLAGS = ("avx", "avx2", "fma", "avx512f")
MAX_RECORD_BYTES = 64 * 1024


class RecordError(Exception):
    """The record cannot be used (missing, unreadable, not JSON, wrong shape)."""


def clean(value):
    """Whitespace-collapsed string, or None (what is compared of a text field)."""
    if not isinstance(value, str):
        return None
    return " ".join(value.split()) or None


def flags_of(desc):
    flags = desc.get("cpu_flags")
    return flags if isinstance(flags, dict) else {}


def recorded_cpu(desc):
    return clean(desc.get("cpu_model"))


def make_record(facts, available):
    """The record for nnpack_facts' ``facts`` and the verdict ``available``.

    ``use_nnpack`` is empty only for ``available is True``: anything else (False, None,
    a string) disables NNPACK, which costs nothing on x86 (oneDNN does Conv2d), while a
    wrong "on" fills the journal with NNPACK's warning.
    """
    return {
        "fingerprint": facts.get("fingerprint"),
        "cpu_model": facts.get("cpu_model"),
        "cpu_flags": {k: v for k, v in (facts.get("cpu_flags") or {}).items() if k in RECORD_FLAGS},
        "cpu_capability": facts.get("torch_cpu_capability"),
        "status": facts.get("status"),
        "available": available,
        "use_nnpack": "" if available is True else "0",
    }


def record_text(record):
    """The file's bytes as the role renders them (Ansible's ``to_nice_json`` and a newline)."""
    return json.dumps(record, indent=4, sort_keys=True, separators=(",", ": ")) + "\n"


def _read_object(path):
    """The JSON object at ``path``; RecordError (FileNotFoundError for a missing file)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RecordError("cannot read: %s" % (exc.strerror or exc)) from None
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError("larger than %d bytes" % MAX_RECORD_BYTES)
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordError("not valid JSON: %s" % exc) from None
    if not isinstance(record, dict):
        raise RecordError("not a JSON object but %s" % type(record).__name__)
    return record


def read_previous(path):
    """(record, problem) for the role: a host without a record has ``{}`` and no problem;
    an unusable one ``{}`` and the reason, since a deploy must go on (USE_NNPACK=0 is safe)."""
    try:
        return _read_object(path), None
    except FileNotFoundError:
        return {}, None
    except RecordError as exc:
        return {}, str(exc)


def load_record(path):
    """The record for the service's drift guard; RecordError with a reason when it cannot
    compare anything with it (missing included: the service was told to use it)."""
    try:
        record = _read_object(path)
    except FileNotFoundError:
        raise RecordError("no such file") from None
    if not clean(record.get("fingerprint")) and not recorded_cpu(record) and not any(
            isinstance(v, bool) for v in flags_of(record).values()) \
            and not clean(record.get("cpu_capability")):
        raise RecordError("no fingerprint, cpu_model, cpu_flags or cpu_capability to compare")
    return record


def cpu_differences(recorded, current):
    """How two CPUs (in the record's shape) differ: [{"field", "recorded", "current"}].

    The one rule: with a fingerprint on both sides, the CPU is the same exactly when they
    are equal; when they differ, cpu_model (whitespace-collapsed, case-insensitive) and the
    RECORD_FLAGS (booleans only) that differ are listed first, to say what changed, then
    the fingerprint. Without a fingerprint on either side (records older than it),
    cpu_model and the flags decide. Missing, null or wrongly typed on either side is
    unknown and not compared. torch's cpu_capability is not part of it (see drift.compare).
    """
    differences = []
    old_print, new_print = clean(recorded.get("fingerprint")), clean(current.get("fingerprint"))
    both_printed = old_print is not None and new_print is not None
    if both_printed and old_print == new_print:
        return differences
    old, new = recorded_cpu(recorded), recorded_cpu(current)
    if old is not None and new is not None and old.casefold() != new.casefold():
        differences.append({"field": "cpu_model", "recorded": old, "current": new})
    old_flags, new_flags = flags_of(recorded), flags_of(current)
    for name in RECORD_FLAGS:
        old, new = old_flags.get(name), new_flags.get(name)
        if isinstance(old, bool) and isinstance(new, bool) and old != new:
            differences.append({"field": name, "recorded": old, "current": new})
    if both_printed:
        differences.append({"field": "fingerprint", "recorded": old_print, "current": new_print})
    return differences


def comparable(recorded, current):
    """Whether the rule has anything known on both sides to go by."""
    if clean(recorded.get("fingerprint")) and clean(current.get("fingerprint")):
        return True
    if recorded_cpu(recorded) and recorded_cpu(current):
        return True
    old_flags, new_flags = flags_of(recorded), flags_of(current)
    return any(isinstance(old_flags.get(n), bool) and isinstance(new_flags.get(n), bool) for n in RECORD_FLAGS)


def same_cpu(recorded, current):
    """Whether ``current`` is the CPU ``recorded`` describes (both in the record's shape).

    Nothing known on both sides is not the same CPU: a verdict is only kept for a CPU
    known to be the one it was made for. (The drift guard, which only ever turns NNPACK
    off on a difference, lists ``cpu_differences`` instead and so treats it as no drift.)
    """
    return comparable(recorded, current) and not cpu_differences(recorded, current)
