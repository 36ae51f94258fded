"""The fleet model of bench/bench-fleet-cost: from what one host cost (measured), what N hosts
would cost at the play's `serial` and ansible.cfg's `forks`.

Stdlib only, no I/O but the two readers of the project's files, so that tests/service/
test_fleet_model.py can check the arithmetic case by case.

The rule, per serial batch of b hosts (batches as ansible-core cuts them, see `batches`):
  forks-bound    ceil(b / forks) * host_s      hosts beyond `forks` wait for a free worker
  cpu-bound      b * cpu_s / cores             the controller has `cores` CPUs for all workers
  uplink-bound   b * upload_bytes / uplink     every host pulls its wheels from the controller
  batch time  =  the largest of the three (the bound that binds is reported)
and the run = startup_s + the sum over batches; upload = N * upload_bytes.
"""
from __future__ import annotations

import ast
import configparser
import math
import re
from dataclasses import dataclass, field

FORMULA = ("wall(N) = startup + sum over serial batches b of max(ceil(b/forks) * host_s, "
           "b * cpu_s / cores, b * upload / uplink);  upload(N) = N * upload")


def pct_to_int(value, total: int) -> int:
    """ansible-core's reading of one serial item: "25%" of the whole play's hosts (not of the
    hosts left), at least 1; a number as it is."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return int(int(value.strip()[:-1]) / 100.0 * total) or 1
    return int(value)


def batches(n: int, serial) -> list:
    """Batch sizes for n hosts, as ansible-core's PlaybookExecutor._get_serialized_batches cuts
    them: the list's items in turn, the last one repeated; 0, negative or none: one batch."""
    items = list(serial) if isinstance(serial, (list, tuple)) else [0 if serial is None else serial]
    items = items or [0]
    out, left, i = [], n, 0
    while left > 0:
        size = pct_to_int(items[i], n)
        if size <= 0:
            out.append(left)
            break
        take = min(size, left)
        out.append(take)
        left -= take
        i = min(i + 1, len(items) - 1)
    return out


@dataclass
class Batch:
    hosts: int
    seconds: float
    bound: str  # "forks", "cpu" or "uplink": which term set the batch's time


@dataclass
class Estimate:
    hosts: int
    wall_s: float
    upload_bytes: int
    batches: list = field(default_factory=list)

    def bounds(self) -> dict:
        """How many batches each bound set, e.g. {"forks": 1, "cpu": 4}."""
        out = {}
        for b in self.batches:
            out[b.bound] = out.get(b.bound, 0) + 1
        return out


def batch_time(b: int, forks: int, host_s: float, cpu_s: float, cores: int,
               upload_bytes: int, uplink_bytes_s: float) -> Batch:
    terms = {
        "forks": math.ceil(b / max(forks, 1)) * host_s,
        "cpu": b * cpu_s / max(cores, 1),
        "uplink": (b * upload_bytes / uplink_bytes_s) if uplink_bytes_s > 0 else 0.0,
    }
    # ties go to the first named: forks before cpu before uplink
    bound = max(terms, key=lambda k: (terms[k], -list(terms).index(k)))
    return Batch(hosts=b, seconds=terms[bound], bound=bound)


def estimate(n: int, serial, forks: int, host_s: float, cpu_s: float, cores: int,
             upload_bytes: int = 0, uplink_bytes_s: float = 0.0, startup_s: float = 0.0) -> Estimate:
    bs = [batch_time(b, forks, host_s, cpu_s, cores, upload_bytes, uplink_bytes_s) for b in batches(n, serial)]
    return Estimate(hosts=n, wall_s=startup_s + sum(b.seconds for b in bs), upload_bytes=n * upload_bytes, batches=bs)


_SERIAL_RE = re.compile(r"^\s*serial:\s*(.+?)\s*$", re.M)


def read_serial(playbook_text: str):
    """The play's default serial: the literal in `serial: "{{ var | default(X) }}"`, or a plain
    `serial: X`; None when the play has none (all hosts in one batch)."""
    m = _SERIAL_RE.search(playbook_text)
    if not m:
        return None
    value = m.group(1).strip().strip("\"'")
    d = re.search(r"default\((.*)\)\s*}}", value)
    if d:
        return ast.literal_eval(d.group(1))
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def read_forks(cfg_text: str) -> int:
    """[defaults] forks of an ansible.cfg; ansible-core's default, 5, when it is not set."""
    cp = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    cp.read_string(cfg_text)
    return cp.getint("defaults", "forks", fallback=5)
