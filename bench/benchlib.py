"""Shared helpers of the bench/ scripts: running deploys (bench-rerun, bench-first-deploy,
probe-on-guest) and bench-service's baseline check.

Stdlib only. Runs ansible-playbook with the project's venv and ansible.cfg, streams its output into a
log file while printing progress lines (the task it is in, every --heartbeat seconds), and parses what
the run printed: the PLAY RECAP per host, the tasks that reported `changed`, and the TASK TIMES block of
the task_timer callback (plugins/callback/task_timer.py). Also boots and stops guests with
scripts/droplets in a state directory of the caller's choosing.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
DROPLETS = REPO / "scripts" / "droplets"
DEPLOY = REPO / "playbooks" / "deploy.yml"
FLOOR = REPO / "bench" / "floor.yml"
WHEELHOUSE = REPO / ".cache" / "wheelhouse"
RELEASE_PYTHON = "/opt/torch-backend/current/venv/bin/python"

_T0 = time.monotonic()
_PROG = Path(sys.argv[0]).name


def log(msg: str) -> None:
    """A progress line, with the seconds since the script started."""
    print(f"[{_PROG} +{time.monotonic() - _T0:.0f}s] {msg}", flush=True)


def load() -> str:
    """`uptime` and the number of QEMU guests running on the machine (anyone's)."""
    up = subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()
    qemu = subprocess.run(["pgrep", "-c", "-f", "^qemu-system"], check=False, capture_output=True, text=True).stdout.strip()
    return f"{up}; {qemu or 0} QEMU guest(s) running on the machine"


def env(extra: dict | None = None) -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{VENV_BIN}:{e.get('PATH', '')}"
    e["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    e["ANSIBLE_NOCOLOR"] = "1"
    e.pop("ANSIBLE_FORCE_COLOR", None)
    e.setdefault("TASK_TIMER_TOP", "60")  # the whole breakdown; the scripts print the top of it
    e["PYTHONUNBUFFERED"] = "1"
    if extra:
        e.update(extra)
    return e


@dataclass
class Run:
    argv: list
    rc: int
    wall: float
    text: str
    logfile: Path
    recap: dict = field(default_factory=dict)       # host -> {ok, changed, unreachable, failed, ...}
    changed_tasks: list = field(default_factory=list)  # (task, host)
    task_times: list = field(default_factory=list)  # (seconds, task) as task_timer printed them
    timer_total: float | None = None
    tree_changed: bool = False                     # set by the caller

    def changed(self, host: str) -> int | None:
        return self.recap.get(host, {}).get("changed")


RECAP_RE = re.compile(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$")
HEADER_RE = re.compile(r"^(TASK|RUNNING HANDLER) \[(.*)\] \**$")
RESULT_RE = re.compile(r"^(changed|ok|skipping|failed|fatal): \[([^\]]+)\]")
TIMER_RE = re.compile(r"^\s*([0-9.]+) s  (.*)$")


def parse(run: Run) -> Run:
    task = None
    in_recap = in_timer = False
    for line in run.text.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap, in_timer = True, False
            continue
        if line.startswith("TASK TIMES"):
            in_timer, in_recap = True, False
            continue
        if in_timer:
            m = TIMER_RE.match(line)
            if m:
                if m.group(2) == "total":
                    run.timer_total = float(m.group(1))
                    in_timer = False
                else:
                    run.task_times.append((float(m.group(1)), m.group(2)))
            continue
        if in_recap:
            m = RECAP_RE.match(line.strip())
            if m:
                run.recap[m.group(1)] = {k: int(v) for k, v in (kv.split("=") for kv in m.group(2).split())}
                continue
        m = HEADER_RE.match(line)
        if m:
            task = m.group(2)
            continue
        m = RESULT_RE.match(line)
        if m and m.group(1) == "changed":
            run.changed_tasks.append((task, m.group(2).split(" -> ")[0]))
    return run


def run_logged(argv: list, logfile: Path, label: str, extra_env: dict | None = None,
               heartbeat: float = 30.0, quiet: bool = False) -> Run:
    """Run argv (stdout+stderr into logfile), printing the task it is in every `heartbeat` seconds."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    state = {"task": "(starting)", "since": time.monotonic()}
    lines = []
    started = time.monotonic()
    with open(logfile, "w") as out:
        out.write("$ " + " ".join(shlex.quote(str(a)) for a in argv) + "\n")
        out.flush()
        proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env(extra_env), cwd=REPO, text=True,
                                errors="replace", bufsize=1)

        def reader():
            for line in proc.stdout:
                out.write(line)
                lines.append(line)
                m = HEADER_RE.match(line.rstrip("\n"))
                if m:
                    state["task"], state["since"] = m.group(2), time.monotonic()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        next_note = started + heartbeat
        while proc.poll() is None:
            time.sleep(0.2)
            now = time.monotonic()
            if not quiet and now >= next_note:
                next_note = now + heartbeat
                log(f"{label}: {now - started:.0f}s, in task \"{state['task']}\" for {now - state['since']:.0f}s")
        wall = time.monotonic() - started
        t.join(timeout=10)
    return parse(Run(argv=argv, rc=proc.returncode, wall=wall, text="".join(lines), logfile=logfile))


def playbook_argv(playbook: Path, inventory: Path, extra_vars: dict) -> list:
    argv = [VENV_BIN / "ansible-playbook", "-i", inventory, playbook]
    for k, v in extra_vars.items():
        argv += ["-e", f"{k}={v}"]
    return argv


def shown(argv: list) -> str:
    """The command as a user would type it from the repository root."""
    out = []
    for a in argv:
        s = str(a)
        if s.startswith(str(REPO) + "/"):
            s = os.path.relpath(s, REPO)
        out.append(shlex.quote(s))
    return " ".join(out)


def droplets(args: list, state_dir: Path, inventory: Path) -> float:
    """Run scripts/droplets (its progress goes to our stderr); -> wall seconds. Raises on failure."""
    e = dict(os.environ, DROPLETS_STATE_DIR=str(state_dir), DROPLETS_INVENTORY=str(inventory))
    started = time.monotonic()
    r = subprocess.run([str(DROPLETS)] + args, check=False, env=e, cwd=REPO, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - started
    if r.returncode != 0:
        raise SystemExit(f"scripts/droplets {' '.join(args)} failed (rc {r.returncode})")
    return wall


def host_ssh_argv(inventory: Path, host: str) -> list:
    """ssh argv for an inventory host (droplets: 127.0.0.1, port, key, common args)."""
    r = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(inventory), "--host", host],
                       check=False, capture_output=True, text=True, env=env(), cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"host {host} not in {inventory}: {r.stderr.strip()[-300:]}")
    hv = json.loads(r.stdout)
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]
    argv += shlex.split(hv.get("ansible_ssh_common_args", ""))
    if hv.get("ansible_port"):
        argv += ["-p", str(hv["ansible_port"])]
    if hv.get("ansible_ssh_private_key_file"):
        argv += ["-i", str(hv["ansible_ssh_private_key_file"])]
    argv.append(f"{hv.get('ansible_user', 'root')}@{hv.get('ansible_host', host)}")
    return argv


def tree_digest(root: Path = REPO) -> str:
    """sha256 over what a deploy reads from the repository (role, playbooks, callback plugin): a change
    between two runs means the second one deployed other code (e.g. someone editing the working tree)."""
    import hashlib
    h = hashlib.sha256()
    for top in ("roles/pytorch_backend", "playbooks", "plugins", "ansible.cfg"):
        base = root / top
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for f in files:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def git_state(root: Path = REPO) -> str:
    """HEAD and whether the deploy's inputs have uncommitted changes."""
    head = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %ci"], check=False,
                          capture_output=True, text=True).stdout.strip() or "(no git)"
    dirty = subprocess.run(["git", "-C", str(root), "status", "--short", "--", "roles", "playbooks", "plugins"],
                           check=False, capture_output=True, text=True).stdout.split("\n")
    dirty = [d.strip() for d in dirty if d.strip()]
    return f"HEAD {head}" + (f"; uncommitted: {', '.join(dirty)}" if dirty else "; role/playbooks clean")


def median(values: list) -> float:
    return statistics.median(values) if values else float("nan")


def aggregate_times(runs: list) -> list:
    """Median seconds per task over runs (a task missing from a run counts 0) -> [(seconds, task)]."""
    names = []
    for r in runs:
        for _, n in r.task_times:
            if n not in names:
                names.append(n)
    rows = []
    for n in names:
        vals = [{t: s for s, t in r.task_times}.get(n, 0.0) for r in runs]
        rows.append((median(vals), n))
    return sorted(rows, reverse=True)


def print_top(rows: list, total: float, top: int, indent: str = "  ") -> None:
    listed = 0.0
    for seconds, name in rows[:top]:
        listed += seconds
        share = 100.0 * seconds / total if total else 0.0
        print(f"{indent}{seconds:7.1f} s {share:5.1f}%  {name}")
    rest = sum(s for s, _ in rows[top:])
    if rows[top:]:
        print(f"{indent}{rest:7.1f} s {100.0 * rest / total if total else 0:5.1f}%  ({len(rows) - top} other tasks)")


# How much slower than the service's own forward pass an in-process baseline may be
# before a ratio against it says more about the baseline than about the service.
BASELINE_TOLERANCE = 0.10


def baseline_problem(label: str, baseline_s: float | None, forward_s: float | None,
                     tolerance: float = BASELINE_TOLERANCE) -> str | None:
    """Why `baseline_s` (the model run in-process, the way the service runs it) cannot be
    the denominator of an overhead ratio, or None when it can.

    The baseline has nothing to do but the forward pass, so it can be no slower than the
    same forward pass inside the service (`forward_s`, from the service's own metrics in
    the same run). When it is, the ratio would credit HTTP with the baseline's losses
    (a 302 ms baseline against a 73 ms service once printed a p50 ratio of 0.25)."""
    if forward_s is None or not forward_s > 0:
        return f"{label}: no forward time from the service to check the baseline against"
    if baseline_s is None or not baseline_s > 0:
        return f"{label}: no in-process baseline measured"
    if baseline_s > forward_s * (1 + tolerance):
        return (f"{label}: baseline invalid: {baseline_s * 1e3:.3f} ms in-process against "
                f"{forward_s * 1e3:.3f} ms for the service's own forward pass in the same "
                f"run ({baseline_s / forward_s:.2f}x, more than {1 + tolerance:.2f}x)")
    return None
