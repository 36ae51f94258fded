"""The CPU budget as the running service reports it: GET /v2's "cpu" object, the
start-up line and the gauges; and the real service inside a cgroup with a CPU quota.

The cgroup tests make a child cgroup with a quota of one CPU (cgroup v2 cpu.max,
or the v1 cpu controller's cfs quota where the cpu controller is on v1) and start
the service through a wrapper that moves itself into it before exec: the service
then reads the quota as it does under systemd's CPUQuota=. They need root and a
writable cgroup hierarchy with the cpu controller; without one they are skipped
(with the reason), never passed.
"""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SELFTEST_INFER, SELFTEST_PAYLOAD, ServerProcess, assert_selftest_answers
from torch_backend import cpu_budget

CPU_KEYS = {"budget", "affinity", "quota_cpus", "source", "intra_op_threads",
            "inter_op_threads", "workers", "throttled_share"}
CGROUP_ROOT = Path("/sys/fs/cgroup")

# Runs first in the child process: into the cgroup (argv[1] = its cgroup.procs), then
# exec the command, which keeps the pid and so the cgroup.
INTO_CGROUP = ("import os, sys\n"
               "with open(sys.argv[1], 'w') as f:\n"
               "    f.write(str(os.getpid()))\n"
               "os.execvp(sys.argv[2], sys.argv[2:])\n")


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """Built-in models only, threads left to the budget (nothing configured)."""
    srv = ServerProcess(tmp_path_factory.mktemp("cpu-report")).start()
    try:
        srv.wait_ready()
        yield srv
    finally:
        assert srv.terminate() == 0, srv.stderr


def check_cpu_object(cpu):
    assert set(cpu) == CPU_KEYS, cpu
    assert 1 <= cpu["budget"] <= cpu["affinity"] <= os.cpu_count()
    if cpu["quota_cpus"] is None:
        assert cpu["budget"] == cpu["affinity"]
        assert cpu["throttled_share"] is None
    else:
        assert cpu["budget"] == max(1, min(cpu["affinity"], math.floor(cpu["quota_cpus"])))
        assert cpu["source"].endswith(("/cpu.max", "/cpu.cfs_quota_us"))
    share = cpu["throttled_share"]
    assert share is None or 0.0 <= share <= 1.0
    assert cpu["workers"] * cpu["intra_op_threads"] <= cpu["budget"]
    assert 1 <= cpu["inter_op_threads"] <= cpu["budget"]


def test_v2_reports_the_budget_and_the_threads_sized_from_it(plain_server):
    status, meta = plain_server.get_json("/v2")
    assert status == 200
    cpu = meta["cpu"]
    check_cpu_object(cpu)
    # The service runs in this test's cgroups with its affinity: the same budget.
    mine = cpu_budget.read_budget()
    assert (cpu["budget"], cpu["affinity"], cpu["quota_cpus"], cpu["source"]) == \
        (mine["budget"], mine["affinity"], mine["quota_cpus"], mine["source"])
    # Nothing configured: the whole budget shared out among the workers.
    assert cpu["workers"] == 1 and cpu["intra_op_threads"] == cpu["budget"]
    assert cpu["inter_op_threads"] == 1


def test_start_line_names_the_budget_its_source_and_the_threads(plain_server):
    cpu = plain_server.get_json("/v2")[1]["cpu"]
    quota = "none" if cpu["quota_cpus"] is None else f"{cpu['quota_cpus']:g}"
    (line,) = [ln for ln in plain_server.stderr.splitlines() if "starting torch-backend" in ln]
    assert f"intra_op_threads={cpu['intra_op_threads']} " in line
    assert f"inter_op_threads={cpu['inter_op_threads']} workers={cpu['workers']} " in line
    assert (f"cpu_budget={cpu['budget']} (affinity={cpu['affinity']} quota_cpus={quota} "
            f"from {cpu['source']})") in line


def test_cpu_gauges(plain_server):
    cpu = plain_server.get_json("/v2")[1]["cpu"]
    assert plain_server.metric("torch_backend_cpu_budget") == cpu["budget"]
    assert plain_server.metric("torch_backend_intra_op_threads") == cpu["intra_op_threads"]
    share = plain_server.metric("torch_backend_cpu_throttled_share")
    if cpu["quota_cpus"] is None:
        assert math.isnan(share)
    else:
        assert 0.0 <= share <= 1.0


def test_configured_intra_op_threads_are_reported_as_set(tmp_path):
    srv = ServerProcess(tmp_path, {"TORCH_BACKEND_INTRA_OP_THREADS": "1"}).start()
    try:
        srv.wait_ready()
        cpu = srv.get_json("/v2")[1]["cpu"]
        check_cpu_object(cpu)
        assert cpu["intra_op_threads"] == 1
        assert srv.metric("torch_backend_intra_op_threads") == 1
    finally:
        assert srv.terminate() == 0, srv.stderr


# --- a real cgroup with a CPU quota --------------------------------------------------

def _mount_types():
    """{mount point: file-system type} from /proc/self/mountinfo."""
    types = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        types[left.split()[4]] = right.split()[0] if right else ""
    return types


def make_quota_cgroup(name):
    """A new cgroup with a quota of one CPU: (its directory, the quota file the service
    should name), or (None, why not). v2 when /sys/fs/cgroup is cgroup2; else the v1
    cpu hierarchy at /sys/fs/cgroup/cpu, where cpu_budget looks for it."""
    types = _mount_types()
    try:
        if types.get(str(CGROUP_ROOT)) == "cgroup2":
            child = CGROUP_ROOT / name
            child.mkdir()
            if "cpu" not in (child / "cgroup.controllers").read_text().split():
                (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu")
            (child / "cpu.max").write_text("100000 100000")
            return child, child / "cpu.max"
        # Often a link to the "cpu,cpuacct" mount: the path the service reports is the mount.
        v1 = (CGROUP_ROOT / "cpu").resolve()
        if types.get(str(v1)) == "cgroup" and (v1 / "cpu.cfs_quota_us").exists():
            child = v1 / name
            child.mkdir()
            (child / "cpu.cfs_period_us").write_text("100000")
            (child / "cpu.cfs_quota_us").write_text("100000")
            return child, child / "cpu.cfs_quota_us"
    except OSError as exc:
        remove_cgroup(CGROUP_ROOT / name)
        remove_cgroup(CGROUP_ROOT / "cpu" / name)
        return None, f"cannot set up a cgroup with a CPU quota: {exc}"
    return None, (f"{CGROUP_ROOT} is {types.get(str(CGROUP_ROOT), 'not a mount')} without a "
                  f"v1 cpu hierarchy: no cpu controller to put a quota on")


def remove_cgroup(path, timeout=10.0):
    """rmdir once the processes in it are gone (a cgroup is removed by rmdir only)."""
    deadline = time.monotonic() + timeout
    while path.is_dir():
        try:
            path.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def set_quota(quota_file, quota_us):
    """A quota of quota_us per 100 ms period, in the quota file's own format."""
    quota_file.write_text(f"{quota_us} 100000" if quota_file.name == "cpu.max" else str(quota_us))


def periods(child):
    stat = dict(line.split() for line in (child / "cpu.stat").read_text().splitlines())
    return int(stat["nr_periods"]), int(stat["nr_throttled"])


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory):
    """The real service started inside a cgroup limited to one CPU."""
    child, quota_file = make_quota_cgroup(f"torch-backend-test-{os.getpid()}")
    if child is None:
        pytest.skip(quota_file)
    srv = ServerProcess(tmp_path_factory.mktemp("cpu-quota"),
                        wrapper=[sys.executable, "-c", INTO_CGROUP,
                                 str(child / "cgroup.procs")])
    try:
        srv.start()
        srv.wait_ready()
        yield srv, child, quota_file
    finally:
        try:
            assert srv.terminate() == 0, srv.stderr
        finally:
            remove_cgroup(child)


def test_service_in_a_cgroup_takes_its_budget_from_the_quota(quota_server):
    srv, child, quota_file = quota_server
    assert str(srv.proc.pid) in (child / "cgroup.procs").read_text().split()
    assert_selftest_answers(srv, 3)
    cpu = srv.get_json("/v2")[1]["cpu"]
    check_cpu_object(cpu)
    assert (cpu["budget"], cpu["quota_cpus"], cpu["source"]) == (1, 1.0, str(quota_file))
    assert cpu["affinity"] == len(os.sched_getaffinity(0))
    assert (cpu["workers"], cpu["intra_op_threads"], cpu["inter_op_threads"]) == (1, 1, 1)
    # A quota counts periods: the share is a number, not "unknown".
    assert periods(child)[0] > 0
    assert 0.0 <= cpu["throttled_share"] <= 1.0
    assert srv.metric("torch_backend_cpu_budget") == 1
    assert srv.metric("torch_backend_intra_op_threads") == 1
    assert 0.0 <= srv.metric("torch_backend_cpu_throttled_share") <= 1.0
    assert "cpu_budget=1 (affinity=" in srv.stderr
    assert f"quota_cpus=1 from {quota_file})" in srv.stderr


BURN = ("import time\n"
        "end = time.monotonic() + float(__import__('sys').argv[1])\n"
        "while time.monotonic() < end:\n"
        "    pass\n")


def test_throttling_in_the_cgroup_shows_in_the_throttled_share(quota_server):
    srv, child, quota_file = quota_server
    before = srv.get_json("/v2")[1]["cpu"]["throttled_share"]
    throttled_before = periods(child)[1]
    # Busy processes in the service's cgroup, under a tenth of a CPU for the while: the
    # kernel throttles the whole cgroup, the service included. (A tenth, not the one
    # CPU the service was sized for: on a loaded machine the burners may not get one
    # CPU's worth between them, and nothing would be throttled.)
    set_quota(quota_file, 10000)
    try:
        burners = [subprocess.Popen([sys.executable, "-c", INTO_CGROUP,
                                     str(child / "cgroup.procs"), sys.executable, "-c", BURN,
                                     "2.0"]) for _ in range(3)]
        for proc in burners:
            assert proc.wait(timeout=120) == 0
    finally:
        set_quota(quota_file, 100000)
    assert periods(child)[1] > throttled_before
    after = srv.get_json("/v2")[1]["cpu"]["throttled_share"]
    assert after > 0.0 and after > before
    assert srv.metric("torch_backend_cpu_throttled_share") > 0.0
    # The service still answers, and correctly, after being throttled.
    status, _, body = srv.request("POST", SELFTEST_INFER, json.dumps(SELFTEST_PAYLOAD).encode())
    assert status == 200, body
