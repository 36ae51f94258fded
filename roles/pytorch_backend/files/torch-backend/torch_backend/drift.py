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

Describing the current CPU never touches NNPACK: it reads /proc/cpuinfo (the
first processor block, as the role does) and
``torch.backends.cpu.get_cpu_capability()``, which also catches emulated CPUs
(qemu-user) whose /proc/cpuinfo shows the host's CPU.

A field missing from the record (older records have no ``cpu_flags`` or
``cpu_capability``), null in it, or unknown on this host is "unknown, not
compared": only known-on-both-sides values can differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Optional

from .nnpack import Decision, decide, probe

FLAGS = ("avx", "avx2", "fma", "avx512f")
MAX_RECORD_BYTES = 64 * 1024
CPUINFO = "/proc/cpuinfo"
PERMANENT = "re-run the deploy playbook to make this permanent"


class RecordError(Exception):
    """The record cannot be used (missing, unreadable, not JSON, wrong shape)."""


def _clean(value) -> Optional[str]:
    """Whitespace-collapsed string, or None (the role's normalisation)."""
    if not isinstance(value, str):
        return None
    return " ".join(value.split()) or None


# --- the two sides ---------------------------------------------------------------

def load_record(path: str) -> dict:
    """Read and sanity-check the role's record; raise RecordError with a reason."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        raise RecordError("no such file") from None
    except OSError as exc:
        raise RecordError(f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError(f"larger than {MAX_RECORD_BYTES} bytes")
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise RecordError(f"not a JSON object but {type(record).__name__}")
    if not recorded_cpu(record) and not any(
            isinstance(v, bool) for v in _flags(record).values()) \
            and not _clean(record.get("cpu_capability")):
        raise RecordError("no cpu_model, cpu_flags or cpu_capability to compare")
    return record


def _flags(desc: dict) -> dict:
    flags = desc.get("cpu_flags")
    return flags if isinstance(flags, dict) else {}


def recorded_cpu(desc: dict) -> Optional[str]:
    return _clean(desc.get("cpu_model"))


def parse_cpuinfo(text: str) -> dict:
    """cpu_model and cpu_flags from /proc/cpuinfo text, read like the role reads it:
    the first processor block; "model name", else (Arm) "CPU part"."""
    info: dict = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip().lower(), value.strip())
    model = _clean(info.get("model name"))
    if model is None and "cpu part" in info:
        model = "CPU part " + info["cpu part"]
    words = set((info.get("flags") or info.get("features") or "").split())
    return {"cpu_model": model, "cpu_flags": {name: name in words for name in FLAGS}}


def current_cpu(cpuinfo_path: str = CPUINFO) -> dict:
    """This CPU, in the record's shape. Unknown parts are None. Never touches NNPACK."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            desc = parse_cpuinfo(f.read())
    except OSError:
        desc = {"cpu_model": None, "cpu_flags": None}
    try:
        import torch

        desc["cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - describing the CPU must never stop start-up
        desc["cpu_capability"] = None
    return desc


# --- the comparison (pure) -----------------------------------------------------------

def compare(recorded: dict, current: dict) -> list:
    """Fields known on both sides that differ: [{"field", "recorded", "current"}].

    Compared: cpu_model (whitespace-collapsed, case-insensitive), the flags
    avx/avx2/fma/avx512f (booleans only), cpu_capability. Anything missing,
    null or of the wrong type on either side is unknown and not compared.
    """
    differences = []
    old, new = recorded_cpu(recorded), recorded_cpu(current)
    if old is not None and new is not None and old.casefold() != new.casefold():
        differences.append({"field": "cpu_model", "recorded": old, "current": new})
    old_flags, new_flags = _flags(recorded), _flags(current)
    for name in FLAGS:
        old, new = old_flags.get(name), new_flags.get(name)
        if isinstance(old, bool) and isinstance(new, bool) and old != new:
            differences.append({"field": name, "recorded": old, "current": new})
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


def check(path: Optional[str], current: Optional[dict] = None,
          cpuinfo_path: str = CPUINFO) -> DriftReport:
    """Compare the record at ``path`` with this CPU. Never raises."""
    if not path:
        return DriftReport(detected=False)
    try:
        record = load_record(path)
        if current is None:
            current = current_cpu(cpuinfo_path)
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
