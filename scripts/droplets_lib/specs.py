"""What `up` is asked for: NAME[:CPU[:MEM_MB[:SUITE]]] and CPU models checked against QEMU's list."""

from __future__ import annotations

import re
import subprocess

from .config import qemu_binary
from .images import SUITES
from .messages import DropletError

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")


def parse_spec(spec: str):
    """'NAME[:CPU[:MEM_MB[:SUITE]]]' -> (name, cpu or None, mem or None, suite or None).
    Empty fields mean "default"."""
    parts = spec.split(":")
    if len(parts) > 4:
        raise DropletError(f"bad droplet spec {spec!r}: expected NAME[:CPU[:MEM_MB[:SUITE]]]", 2)
    name = parts[0]
    if not NAME_RE.match(name):
        raise DropletError(
            f"bad droplet name {name!r}: use 1-32 of a-z, 0-9 and '-' (a hostname)", 2)
    cpu = parts[1] if len(parts) > 1 and parts[1] else None
    mem = None
    if len(parts) > 2 and parts[2]:
        if not parts[2].isdigit() or not 256 <= int(parts[2]) <= 1048576:
            raise DropletError(f"bad memory size {parts[2]!r} in {spec!r}: MiB, 256 or more", 2)
        mem = int(parts[2])
    suite = parts[3] if len(parts) > 3 and parts[3] else None
    if suite is not None and suite not in SUITES:
        raise DropletError(f"bad image {suite!r} in {spec!r}: one of {', '.join(SUITES)}", 2)
    return name, cpu, mem, suite


_cpu_models_cache: dict = {}


def cpu_models() -> dict:
    """Lower-case name -> QEMU's spelling of every x86 CPU model this QEMU knows."""
    if not _cpu_models_cache:
        out = subprocess.run([qemu_binary(), "-cpu", "help"], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "x86":
                _cpu_models_cache[fields[1].lower()] = fields[1]
    return _cpu_models_cache


def normalize_cpu(cpu: str) -> str:
    """'haswell,-fma' -> 'Haswell,-fma'; unknown model -> DropletError."""
    base, sep, feats = cpu.partition(",")
    models = cpu_models()
    if base.lower() not in models:
        close = sorted(m for m in models.values() if m.lower().startswith(base.lower()[:3]))
        hint = f" (close: {', '.join(close[:8])})" if close else ""
        raise DropletError(f"unknown CPU model {base!r}{hint}; see `{qemu_binary()} -cpu help`", 2)
    return models[base.lower()] + sep + feats
