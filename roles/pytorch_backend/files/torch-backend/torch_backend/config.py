"""Service configuration, read from environment variables only.

systemd passes them through the role's EnvironmentFile. This module does not
import torch: a bad value must fail in milliseconds, with one message that
names the variable, before the expensive torch import.

Variables (defaults in brackets):

    TORCH_BACKEND_HOST              [127.0.0.1]  IPv4 or IPv6 address (bare: ::1; :: = all,
                                    IPv4 too) or host name (bound over IPv4)
    TORCH_BACKEND_PORT              [8080]  0 = any free port (tests)
    TORCH_BACKEND_MODEL_DIR         [/var/lib/torch-backend/models]  missing = built-ins only
    TORCH_BACKEND_WORKERS           [1]     inference worker threads
    TORCH_BACKEND_QUEUE_SIZE        [16]    requests waiting for a worker; beyond it: 503
    TORCH_BACKEND_MAX_BODY_BYTES    [16777216]  larger bodies: 413, not read
    TORCH_BACKEND_MAX_RESPONSE_BYTES [67108864]  larger responses: 400 before encoding (JSON
                                    text is ~10x the raw bytes: the message points to binary output)
    TORCH_BACKEND_HEADER_TIMEOUT    [10]    seconds from a request's first byte to its last header
    TORCH_BACKEND_BODY_TIMEOUT      [60]    seconds from the headers to the body's last byte
    TORCH_BACKEND_IDLE_TIMEOUT      [60]    seconds an open connection may stay without a request
    TORCH_BACKEND_MAX_CONNECTIONS   [0]     open connections at most; 0 = 128 below the soft
                                    descriptor limit (RLIMIT_NOFILE), which also caps a larger value
    TORCH_BACKEND_INTRA_OP_THREADS  [CPU budget // workers, at least 1]
    TORCH_BACKEND_INTER_OP_THREADS  [1]
    TORCH_BACKEND_LOG_LEVEL         [INFO]
    TORCH_BACKEND_ACCESS_LOG        [0]     1 = one INFO line per request (at DEBUG: always)
    TORCH_BACKEND_DRAIN_SECONDS     [10]    on SIGTERM: time for in-flight requests to finish;
                                    what is still unanswered then gets 503 + Retry-After
    TORCH_BACKEND_REQUEST_DEADLINE_SECONDS [30]  an inference not answered within this many
                                    seconds of its headers gets 503 + Retry-After
    TORCH_BACKEND_QUEUE_WAIT_SECONDS [0.5]  how long a request may wait for a queue slot
                                    before 503 (0 = refuse at once when full)
    TORCH_BACKEND_OVERLOAD_GRACE_SECONDS [2]  /v2/health/ready turns 503 after the queue has
                                    been full this long, and back to 200 once it is not
    USE_NNPACK                      "0" off, "1" on, unset/empty = probe at start-up
    TORCH_BACKEND_CPU_RECORD        [unset]  the role's CPU record (JSON); unset = no drift check
                                    (read at start-up; an unusable file is a warning, not an error)
    TORCH_BACKEND_CONFIG_DIGEST     [unset]  digest of the configuration the deploy wrote (8-64
                                    lowercase hex digits); reported by GET /v2 and /metrics
                                    so the deploy can tell whether the service started with it

The CPU budget (cpu_budget.read_budget) is the CPUs this process may run on
(its affinity), capped by its cgroup's CPU quota (cpu.max; systemd's CPUQuota=)
rounded down, at least 1. Defaults and clamps are sized from it, not from the
affinity alone: threads beyond the quota are throttled, not run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

from . import cpu_budget, listen_address

DEFAULT_MODEL_DIR = "/var/lib/torch-backend/models"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
CONFIG_DIGEST_RE = re.compile(r"^[0-9a-f]{8,64}\Z")


class ConfigError(Exception):
    """A bad configuration value; the message names the variable."""

    def __init__(self, variable: str, value: str, problem: str):
        super().__init__(f"{variable}={value!r}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    model_dir: str = DEFAULT_MODEL_DIR
    workers: int = 1
    queue_size: int = 16
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    header_timeout: int = 10
    body_timeout: int = 60
    idle_timeout: int = 60
    max_connections: int = 0
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    log_level: str = "INFO"
    access_log: bool = False
    drain_seconds: float = 10.0
    request_deadline: float = 30.0
    queue_wait: float = 0.5
    overload_grace: float = 2.0
    # None = unset/empty: decide by probing; otherwise "0" or "1".
    use_nnpack: Optional[str] = None
    # Path of the role's CPU record (drift guard); None = no drift check.
    cpu_record: Optional[str] = None
    # The deploy's digest of the configuration files; None = not given.
    config_digest: Optional[str] = None
    # The CPU budget: what workers x intra-op threads must fit in.
    cores: int = 1
    # Human-readable notes on values that were lowered to fit the budget.
    clamped: tuple = field(default_factory=tuple)
    # Where the budget came from (cpu_budget.read_budget): the affinity, the
    # quota in CPUs (None: none found), the file that set it (or why the
    # affinity stands), and the cpu.stat beside that quota (None: no quota).
    affinity: int = 1
    quota_cpus: Optional[float] = None
    budget_source: str = ""
    cpu_stat: Optional[str] = None
    # TORCH_BACKEND_INTRA_OP_THREADS was set (the value may still have been clamped).
    intra_op_configured: bool = False


def usable_cores() -> int:
    """Cores this process may run on (cgroup cpusets and taskset included); not
    its quota: load() sizes threads from cpu_budget.read_budget() instead."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux: fall back to the count
        return max(1, os.cpu_count() or 1)


def _get(env: Mapping[str, str], name: str) -> Optional[str]:
    """The stripped value, or None when unset or empty (systemd writes `X=`)."""
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: Optional[int] = None) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ConfigError(name, raw, "must be a decimal integer") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(name, raw, f"must be {bound}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, "must be a number of seconds") from None
    # float() takes "nan" and "inf": neither is a time anyone means.
    if not lo <= value <= hi:
        raise ConfigError(name, raw, f"must be between {lo:g} and {hi:g} seconds")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = _get(env, name)
    if raw is None:
        return False
    if raw not in ("0", "1"):
        raise ConfigError(name, raw, 'must be "1" (on), "0" or empty/unset (off)')
    return raw == "1"


def load(env: Optional[Mapping[str, str]] = None, cores: Optional[int] = None,
         budget: Optional[dict] = None) -> Config:
    """Read and validate the configuration; raise ConfigError on the first bad value.

    The CPU budget is `cores` when given (tests: an affinity of that many CPUs and
    no quota), else `budget` (a read_budget() result), else this process's own."""
    env = os.environ if env is None else env
    if cores is not None:
        budget = {"budget": max(1, cores), "affinity": max(1, cores), "quota_cpus": None,
                  "source": "cores given to config.load", "cpu_stat": None}
    elif budget is None:
        budget = cpu_budget.read_budget()
    cores = budget["budget"]

    host = _get(env, "TORCH_BACKEND_HOST") or "127.0.0.1"
    host_problem = listen_address.problem(host)
    if host_problem:
        raise ConfigError("TORCH_BACKEND_HOST", host, host_problem)
    port = _int(env, "TORCH_BACKEND_PORT", 8080, 0, 65535)

    model_dir = _get(env, "TORCH_BACKEND_MODEL_DIR") or DEFAULT_MODEL_DIR
    if os.path.exists(model_dir) and not os.path.isdir(model_dir):
        raise ConfigError("TORCH_BACKEND_MODEL_DIR", model_dir, "exists but is not a directory")

    workers = _int(env, "TORCH_BACKEND_WORKERS", 1, 1, 1024)
    queue_size = _int(env, "TORCH_BACKEND_QUEUE_SIZE", 16, 1, 1_000_000)
    max_body = _int(env, "TORCH_BACKEND_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1, 1 << 40)
    max_response = _int(env, "TORCH_BACKEND_MAX_RESPONSE_BYTES", DEFAULT_MAX_RESPONSE_BYTES,
                        1024, 1 << 40)
    header_timeout = _int(env, "TORCH_BACKEND_HEADER_TIMEOUT", 10, 1, 3600)
    body_timeout = _int(env, "TORCH_BACKEND_BODY_TIMEOUT", 60, 1, 3600)
    idle_timeout = _int(env, "TORCH_BACKEND_IDLE_TIMEOUT", 60, 1, 3600)
    max_connections = _int(env, "TORCH_BACKEND_MAX_CONNECTIONS", 0, 0, 1_000_000)

    intra_configured = _get(env, "TORCH_BACKEND_INTRA_OP_THREADS") is not None
    intra = _int(env, "TORCH_BACKEND_INTRA_OP_THREADS", 0, 1, 4096)
    intra = cpu_budget.intra_op_threads(cores, workers, intra)
    inter = _int(env, "TORCH_BACKEND_INTER_OP_THREADS", 1, 1, 4096)

    level = (_get(env, "TORCH_BACKEND_LOG_LEVEL") or "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError("TORCH_BACKEND_LOG_LEVEL", env["TORCH_BACKEND_LOG_LEVEL"],
                          "must be one of " + ", ".join(LOG_LEVELS))

    access_log = _flag(env, "TORCH_BACKEND_ACCESS_LOG")
    drain = _seconds(env, "TORCH_BACKEND_DRAIN_SECONDS", 10.0, 0.0, 3600.0)
    deadline = _seconds(env, "TORCH_BACKEND_REQUEST_DEADLINE_SECONDS", 30.0, 0.1, 3600.0)
    queue_wait = _seconds(env, "TORCH_BACKEND_QUEUE_WAIT_SECONDS", 0.5, 0.0, 60.0)
    grace = _seconds(env, "TORCH_BACKEND_OVERLOAD_GRACE_SECONDS", 2.0, 0.0, 3600.0)

    use_nnpack = _get(env, "USE_NNPACK")
    if use_nnpack not in (None, "0", "1"):
        raise ConfigError("USE_NNPACK", env["USE_NNPACK"],
                          'must be "0" (disable), "1" (enable) or empty/unset (probe at start-up)')

    cpu_record = _get(env, "TORCH_BACKEND_CPU_RECORD")

    config_digest = _get(env, "TORCH_BACKEND_CONFIG_DIGEST")
    if config_digest is not None and not CONFIG_DIGEST_RE.match(config_digest):
        raise ConfigError("TORCH_BACKEND_CONFIG_DIGEST", config_digest,
                          "must be 8 to 64 lowercase hexadecimal digits (the deploy's "
                          "configuration digest), or empty/unset")

    # Each worker runs its own intra-op thread team, so workers x intra is the
    # number of threads computing at once. More than the budget only adds
    # context switches and cache thrashing, and beyond a cgroup quota the
    # kernel throttles them all: clamp, and say so at start-up.
    clamped = []
    if workers > cores:
        clamped.append(f"TORCH_BACKEND_WORKERS {workers}->{cores}")
        workers = cores
    intra_max = max(1, cores // workers)
    if intra > intra_max:
        clamped.append(f"TORCH_BACKEND_INTRA_OP_THREADS {intra}->{intra_max}")
        intra = intra_max
    if inter > cores:
        clamped.append(f"TORCH_BACKEND_INTER_OP_THREADS {inter}->{cores}")
        inter = cores

    return Config(host=host, port=port, model_dir=model_dir, workers=workers,
                  queue_size=queue_size, max_body_bytes=max_body,
                  max_response_bytes=max_response,
                  header_timeout=header_timeout, body_timeout=body_timeout,
                  idle_timeout=idle_timeout, max_connections=max_connections,
                  intra_op_threads=intra, inter_op_threads=inter, log_level=level,
                  access_log=access_log, drain_seconds=drain, request_deadline=deadline,
                  queue_wait=queue_wait, overload_grace=grace,
                  use_nnpack=use_nnpack, cpu_record=cpu_record,
                  config_digest=config_digest, cores=cores, clamped=tuple(clamped),
                  affinity=budget["affinity"], quota_cpus=budget["quota_cpus"],
                  budget_source=budget["source"], cpu_stat=budget["cpu_stat"],
                  intra_op_configured=intra_configured)
