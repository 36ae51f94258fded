"""CPU drift guard: is the service running on the CPU the role decided for?

The Ansible role probes NNPACK on the host, writes ``USE_NNPACK`` into the
environment file, and records what it saw in a JSON file whose path it passes
as ``TORCH_BACKEND_CPU_RECORD``::

    {"fingerprint": "305b35c0b213a2bb", "cpu_model": "Intel Core i7 9xx (Nehalem Class Core i7)",
     "cpu_flags": {"avx": true, "avx2": false, "fma": false, "avx512f": false},
     "cpu_capability": "DEFAULT", "status": "unsupported_hardware", "available": false,
     "use_nnpack": "0"}

If the host's CPU changes without a new deploy (a resize, a live migration, an
image booted on other hardware), that ``USE_NNPACK`` was decided for another
CPU. At start-up the service compares the record with the CPU it runs on; on
a difference it ignores ``USE_NNPACK``, probes NNPACK itself (the forked,
stderr-captured probe of :mod:`nnpack`) and says so in one WARNING line, in
``GET /v2`` (``cpu_drift``) and in ``/metrics`` (``torch_backend_cpu_drift``)
until a deploy records the new CPU.

The record's format, its reading and the "same CPU" rule live in
``cpu_record.py``, which the role's module reads through a symlink too.
"Same CPU" has one definition, shared with the role: equal fingerprints
(:func:`cpu_identity.fingerprint` of :func:`cpu_identity.gather`'s evidence:
vendor, model, family/model/stepping, architecture, the NNPACK-relevant flags,
cache enumeration). The role's ``nnpack_facts`` module runs that same file
(its module_utils/cpu_identity.py is a symlink to it) and records the
fingerprint; the service computes the fingerprint of the CPU it runs on and
compares. ``cpu_model`` and the flags are compared only to say what changed,
or, for a record without a fingerprint, instead of it. torch's
``get_cpu_capability()`` is compared too, as an extra signal: it sees an
emulated CPU even where the evidence could only come from /proc/cpuinfo,
which shows the host under qemu-user. None of this touches NNPACK.

A field missing from the record (older records have no ``cpu_flags`` or
``cpu_capability``), null in it, or unknown on this host is "unknown, not
compared": only known-on-both-sides values can differ.
"""

from __future__ import annotations

import faulthandler
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import cpu_identity, cpu_record
from .nnpack import Decision, decide, probe

# the record's format, its reading and the "same CPU?" rule are the role's too: one file
FLAGS = cpu_record.RECORD_FLAGS
MAX_RECORD_BYTES = cpu_record.MAX_RECORD_BYTES
RecordError = cpu_record.RecordError
load_record = cpu_record.load_record
recorded_cpu = cpu_record.recorded_cpu
_clean = cpu_record.clean
PERMANENT = "re-run the deploy playbook to make this permanent"


def describe(evidence: dict, capability: Optional[str]) -> dict:
    """A CPU in the record's shape, from cpu_identity evidence and torch's capability: the
    fingerprint the role's probe computes for it, cpu_model, the four flags (None: unknown)."""
    fingerprint, source = cpu_identity.fingerprint(evidence)
    flags = evidence.get("cpu_flags")
    return {"fingerprint": fingerprint, "fingerprint_source": source,
            "cpu_model": evidence.get("cpu_model"),
            "cpu_flags": {name: flags.get(name) for name in FLAGS} if isinstance(flags, dict) else None,
            "cpu_capability": capability}


def gather_evidence() -> dict:
    """:func:`cpu_identity.gather`, run the way the role's probe runs it.

    CPUID executes machine code through ctypes, so it runs in a forked child
    (fork, not exec: the same CPU as the service, also under qemu-user). If the
    child dies, the evidence is read again without CPUID, as the role's probe is
    run again with --no-cpuid: both sides then fingerprint the same evidence.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's code
        try:
            os.close(read_fd)
            faulthandler.disable()
            data = json.dumps(cpu_identity.gather()).encode()
            while data:
                data = data[os.write(write_fd, data):]
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    try:
        while True:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return cpu_identity.gather(use_cpuid=False)


def current_cpu() -> dict:
    """This CPU, in the record's shape (see :func:`describe`). Never touches NNPACK."""
    try:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - describing the CPU must never stop start-up
        capability = None
    return describe(gather_evidence(), capability)


# --- the comparison (pure) -----------------------------------------------------------

def compare(recorded: dict, current: dict) -> list:
    """Fields known on both sides that differ: [{"field", "recorded", "current"}].

    The CPU part is the role's rule, :func:`cpu_record.cpu_differences` (fingerprints
    decide; cpu_model and flags say what changed, or decide for a record without a
    fingerprint). cpu_capability is always compared too, last. Anything missing, null
    or of the wrong type on either side is unknown and not compared.
    """
    differences = cpu_record.cpu_differences(recorded, current)
    old, new = _clean(recorded.get("cpu_capability")), _clean(current.get("cpu_capability"))
    if old is not None and new is not None and old != new:
        differences.append({"field": "cpu_capability", "recorded": old, "current": new})
    return differences


def _describe_difference(diff: dict) -> str:
    def show(value):
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value)
    if diff["field"] == "cpu_model":
        return "cpu_model"
    return f"{diff['field']} {show(diff['recorded'])}->{show(diff['current'])}"


# --- the report -----------------------------------------------------------------------

@dataclass(frozen=True)
class DriftReport:
    # True: the CPU differs from the record; False: it matches (or no record is
    # configured); None: a record is configured but unusable (see error).
    detected: Optional[bool]
    path: Optional[str] = None
    error: Optional[str] = None
    recorded: dict = field(default_factory=dict)
    current: dict = field(default_factory=dict)
    differences: tuple = ()

    @property
    def configured(self) -> bool:
        return self.path is not None

    def word(self) -> str:
        """For the start-up line: cpu_drift=yes/no/unknown."""
        return {True: "yes", False: "no"}.get(self.detected, "unknown")

    def recorded_verdict(self) -> str:
        """What the last deploy decided, e.g. "unsupported_hardware, USE_NNPACK=0"."""
        status = self.recorded.get("status")
        status = status if isinstance(status, str) and status else "status unknown"
        use = self.recorded.get("use_nnpack")
        if use in ("0", "1"):
            use_text = f"USE_NNPACK={use}"
        elif use in ("", None) and "use_nnpack" in self.recorded:
            use_text = "USE_NNPACK unset"
        else:
            use_text = "USE_NNPACK unknown"
        return f"{status}, {use_text}"

    def metadata(self) -> dict:
        """The ``cpu_drift`` field of ``GET /v2``."""
        if not self.configured:
            return {"detected": False}
        if self.detected is None:
            return {"detected": None, "error": self.error, "record": self.path}
        return {
            "detected": self.detected,
            "recorded_cpu": recorded_cpu(self.recorded),
            "current_cpu": recorded_cpu(self.current),
            "recorded_status": self.recorded.get("status"),
            "recorded_use_nnpack": self.recorded.get("use_nnpack"),
            "recorded_fingerprint": self.recorded.get("fingerprint"),
            "current_cpu_capability": self.current.get("cpu_capability"),
            "differences": [dict(d) for d in self.differences],
            "record": self.path,
        }

    def error_line(self) -> str:
        return (f"CPU drift check off: cannot use the CPU record {self.path} "
                f"(TORCH_BACKEND_CPU_RECORD): {self.error}; USE_NNPACK from the environment "
                f"is obeyed as is")

    def drift_line(self, decision: Decision, env_use_nnpack: Optional[str] = None) -> str:
        """The one WARNING line logged on drift: old CPU and verdict, new CPU and verdict."""
        old = recorded_cpu(self.recorded) or "unknown CPU"
        new = recorded_cpu(self.current) or "unknown CPU"
        changes = ", ".join(_describe_difference(d) for d in self.differences)
        env = f"USE_NNPACK={env_use_nnpack}" if env_use_nnpack else "USE_NNPACK (unset)"
        state = "enabled" if decision.enabled else "disabled"
        return (f"CPU drift: recorded CPU {old!r} ({self.recorded_verdict()}), running on "
                f"{new!r} (changed: {changes}); ignoring {env} from the environment: NNPACK "
                f"{state} for this CPU ({decision.reason}); {PERMANENT}")


def check(path: Optional[str], current: Optional[dict] = None) -> DriftReport:
    """Compare the record at ``path`` with this CPU. Never raises."""
    if not path:
        return DriftReport(detected=False)
    try:
        record = load_record(path)
        if current is None:
            current = current_cpu()
        differences = tuple(compare(record, current))
    except RecordError as exc:
        return DriftReport(detected=None, path=path, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - the guard must never stop start-up
        return DriftReport(detected=None, path=path,
                           error=f"drift check failed: {type(exc).__name__}: {exc}")
    return DriftReport(detected=bool(differences), path=path, recorded=record,
                       current=current, differences=differences)


def decide_nnpack(report: DriftReport, use_nnpack: Optional[str],
                  probe_fn: Callable[[], tuple] = probe) -> Decision:
    """On drift, USE_NNPACK was decided for another CPU: probe this one instead."""
    if report.detected:
        available, reason = probe_fn()
        return Decision(available, "drift", reason)
    return decide(use_nnpack, probe_fn)
