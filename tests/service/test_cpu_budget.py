"""torch_backend.cpu_budget: the CPU budget from affinity and cgroup quota, as tables.

The cgroup trees are real files in tmp_path, read by the module's own readers; one test
reads this machine's own /proc/self/cgroup and /sys/fs/cgroup.
"""

import os

import pytest

from torch_backend import cpu_budget as cb


@pytest.mark.parametrize("affinity, cpu_max, expected", [
    (2, "max 100000\n", 2),          # no quota: the affinity
    (4, "50000 100000\n", 1),        # half a CPU: at least 1
    (4, "200000 100000\n", 2),       # 2 CPUs' worth of 4
    (4, "150000 100000\n", 1),       # floor: 1.5 CPUs cannot keep 2 threads busy
    (2, "800000 100000\n", 2),       # a quota above the affinity: the affinity
    (8, "100000 50000\n", 2),        # another period: quota/period
    (8, None, 8),                    # no file (no cpu controller, not Linux)
    (3, "", 3),                      # an empty read
    (3, "lots of 100000", 3),        # unreadable: no limit applied
    (4, "0 100000", 4),              # not a quota the kernel accepts
    (4, "100000", 1),                # quota alone: the default period
    (0, None, 1),                    # never below 1
])
def test_cpu_budget(affinity, cpu_max, expected):
    assert cb.cpu_budget(affinity, cpu_max) == expected


@pytest.mark.parametrize("quota, period, expected", [
    ("-1\n", "100000\n", None),      # v1's "no quota"
    ("50000\n", "100000\n", 0.5),
    ("200000", "100000", 2.0),
    (None, "100000", None),
    ("50000", None, None),
    ("x", "100000", None),
    ("50000", "0", None),
])
def test_cfs_quota_cgroup_v1(quota, period, expected):
    assert cb.cfs_quota(quota, period) == expected


@pytest.mark.parametrize("text, v2, v1", [
    ("0::/system.slice/x.service\n", "/system.slice/x.service", {}),
    ("0::/\n", "/", {}),
    # hybrid: the cpu controller on v1, the unified hierarchy beside it
    ("4:cpu,cpuacct:/user.slice\n3:memory:/m\n0::/user.slice\n", "/user.slice",
     {"cpu,cpuacct": "/user.slice", "memory": "/m"}),
    ("1:cpu:/a\n", None, {"cpu": "/a"}),
    ("1:name=systemd:/\n", None, {"name=systemd": "/"}),
    ("garbage\n2:cpu\n", None, {}),
    ("", None, {}),
    (None, None, {}),
])
def test_own_cgroups(text, v2, v1):
    assert cb.own_cgroups(text) == (v2, v1)


def make_tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


SERVICE = "0::/system.slice/x.service\n"
V1_CPU = "5:cpu,cpuacct:/system.slice/x.service\n"


@pytest.mark.parametrize("proc, files, affinity, budget, quota, source", [
    # cgroup v2, the quota on the service itself
    (SERVICE, {"system.slice/x.service/cpu.max": "50000 100000\n"}, 4, 1, 0.5,
     "system.slice/x.service/cpu.max"),
    (SERVICE, {"system.slice/x.service/cpu.max": "200000 100000\n"}, 4, 2, 2.0,
     "system.slice/x.service/cpu.max"),
    # a parent's quota applies too, the tightest wins
    (SERVICE, {"system.slice/cpu.max": "100000 100000\n",
               "system.slice/x.service/cpu.max": "max 100000\n"}, 4, 1, 1.0,
     "system.slice/cpu.max"),
    (SERVICE, {"system.slice/cpu.max": "300000 100000\n",
               "system.slice/x.service/cpu.max": "200000 100000\n"}, 4, 2, 2.0,
     "system.slice/x.service/cpu.max"),
    # no quota anywhere (and the root cgroup has no cpu.max at all)
    (SERVICE, {"system.slice/x.service/cpu.max": "max 100000\n",
               "system.slice/cpu.max": "max 100000\n"}, 4, 4, None, None),
    (SERVICE, {}, 2, 2, None, None),
    # a container that sees its own cgroup as the root: the named path is not there
    ("0::/docker/abc\n", {"cpu.max": "100000 100000\n"}, 8, 1, 1.0, "cpu.max"),
    # an unreadable level is skipped, the others still count
    (SERVICE, {"system.slice/x.service/cpu.max": "junk\n",
               "system.slice/cpu.max": "200000 100000\n"}, 8, 2, 2.0, "system.slice/cpu.max"),
    # cgroup v1 (cpu,cpuacct mount), quota -1 = none at the service, one on the slice
    (V1_CPU, {"cpu,cpuacct/system.slice/x.service/cpu.cfs_quota_us": "-1\n",
              "cpu,cpuacct/system.slice/x.service/cpu.cfs_period_us": "100000\n",
              "cpu,cpuacct/system.slice/cpu.cfs_quota_us": "150000\n",
              "cpu,cpuacct/system.slice/cpu.cfs_period_us": "100000\n"}, 4, 1, 1.5,
     "cpu,cpuacct/system.slice/cpu.cfs_quota_us"),
    # v1 reached through the plain "cpu" directory
    ("5:cpu,cpuacct:/a\n", {"cpu/a/cpu.cfs_quota_us": "200000\n",
                            "cpu/a/cpu.cfs_period_us": "100000\n"}, 4, 2, 2.0,
     "cpu/a/cpu.cfs_quota_us"),
    # v1 without a quota
    (V1_CPU, {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
              "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 2, 2, None, None),
    # hybrid: v2 line with no cpu.max, the quota on v1's cpu controller
    (V1_CPU + SERVICE, {"unified/system.slice/x.service/cgroup.procs": "",
                        "cpu,cpuacct/system.slice/x.service/cpu.cfs_quota_us": "100000\n",
                        "cpu,cpuacct/system.slice/x.service/cpu.cfs_period_us": "100000\n"},
     2, 1, 1.0, "cpu,cpuacct/system.slice/x.service/cpu.cfs_quota_us"),
    # both hierarchies with quotas: the tighter
    (V1_CPU + SERVICE, {"system.slice/x.service/cpu.max": "300000 100000\n",
                        "cpu,cpuacct/system.slice/cpu.cfs_quota_us": "200000\n",
                        "cpu,cpuacct/system.slice/cpu.cfs_period_us": "100000\n"},
     8, 2, 2.0, "cpu,cpuacct/system.slice/cpu.cfs_quota_us"),
    # a v1 controller other than cpu is not read
    ("3:memory:/m\n", {"memory/m/cpu.cfs_quota_us": "100000\n",
                       "memory/m/cpu.cfs_period_us": "100000\n"}, 2, 2, None, None),
    # no /proc/self/cgroup at all
    (None, {"cpu.max": "100000 100000\n"}, 3, 3, None, None),
], ids=["v2-own-quota", "v2-2-of-4", "v2-parent-tighter", "v2-child-tighter", "v2-max-everywhere",
        "v2-no-files", "container-root", "v2-unreadable-level-skipped", "v1-slice-quota",
        "v1-cpu-dir", "v1-no-quota", "hybrid-v1-quota", "both-v1-tighter", "v1-memory-not-read",
        "no-proc-file"])
def test_read_budget_fake_tree(tmp_path, proc, files, affinity, budget, quota, source):
    root = tmp_path / "cgroup"
    root.mkdir()
    make_tree(root, files)
    proc_file = tmp_path / "proc-self-cgroup"
    if proc is not None:
        proc_file.write_text(proc)
    got = cb.read_budget(str(proc_file), str(root), affinity=affinity)
    assert got["budget"] == budget
    assert got["affinity"] == affinity
    assert got["quota_cpus"] == quota
    if source is None:
        assert got["source"].startswith("affinity")
        assert got["cpu_stat"] is None
    else:
        assert got["source"] == str(root / source)
        assert got["cpu_stat"] == os.path.join(os.path.dirname(str(root / source)), "cpu.stat")


def test_read_budget_cpu_stat_is_where_the_quota_throttles(tmp_path):
    """The cpu.stat read_budget names is the file throttled_share reads, twice."""
    root = tmp_path / "cgroup"
    make_tree(root, {"system.slice/cpu.max": "100000 100000\n",
                     "system.slice/cpu.stat": "usage_usec 5\nnr_periods 100\nnr_throttled 10\n",
                     "system.slice/x.service/cpu.max": "max 100000\n"})
    proc_file = tmp_path / "cgroup-of-self"
    proc_file.write_text(SERVICE)
    stat = cb.read_budget(str(proc_file), str(root), affinity=2)["cpu_stat"]
    before = open(stat).read()
    with open(stat, "w") as f:
        f.write("usage_usec 9\nnr_periods 300\nnr_throttled 60\n")
    assert cb.throttled_share(before, open(stat).read()) == 0.25


def test_read_budget_this_machine():
    got = cb.read_budget()
    assert 1 <= got["budget"] <= os.cpu_count()
    assert got["affinity"] == len(os.sched_getaffinity(0))
    assert got["budget"] <= got["affinity"]
    assert got["quota_cpus"] is None or got["quota_cpus"] > 0


STAT = "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods {}\nnr_throttled {}\nthrottled_usec 7\n"


@pytest.mark.parametrize("before, after, expected", [
    (STAT.format(100, 10), STAT.format(200, 35), 0.25),
    (STAT.format(0, 0), STAT.format(50, 0), 0.0),
    (STAT.format(0, 0), STAT.format(50, 50), 1.0),
    (STAT.format(100, 10), STAT.format(100, 10), None),   # no period passed
    (STAT.format(200, 10), STAT.format(100, 10), None),   # backwards: another cgroup
    (STAT.format(100, 10), STAT.format(200, 5), None),
    (STAT.format(100, 10), STAT.format(110, 30), None),   # more throttled than periods
    ("usage_usec 1\n", "usage_usec 2\n", None),           # no quota: no period counters
    (None, STAT.format(1, 1), None),
    (STAT.format(1, 1), None, None),
    ("nr_periods x\nnr_throttled 1\n", STAT.format(2, 1), None),
])
def test_throttled_share(before, after, expected):
    assert cb.throttled_share(before, after) == expected


@pytest.mark.parametrize("budget, workers, configured, expected", [
    (4, 1, 0, 4),
    (4, 2, 0, 2),
    (4, 3, 0, 1),      # workers x threads <= budget
    (1, 2, 0, 1),      # at least 1
    (2, 0, 0, 2),      # no workers given: one
    (4, 2, 3, 3),      # configured stands
    (1, 1, 8, 8),
    (2, 1, -1, 2),     # not a configured value
])
def test_intra_op_threads(budget, workers, configured, expected):
    assert cb.intra_op_threads(budget, workers, configured) == expected
