"""bench/fleetmodel.py: the arithmetic bench/bench-fleet-cost prints for 10, 100 and 1,000 hosts.

Plain function tests (standard library only, no guest): ansible-core's serial batches, the three
bounds of a batch (forks, controller CPU, uplink) and the readers of playbooks/deploy.yml and
ansible.cfg.
"""

import importlib.util
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("bench_fleetmodel", REPO / "bench" / "fleetmodel.py")
fm = importlib.util.module_from_spec(spec)
sys.modules.setdefault(spec.name, fm)  # its dataclasses look their module up
spec.loader.exec_module(fm)


@pytest.mark.parametrize("n, serial, expected", [
    (10, [1, "25%"], [1, 2, 2, 2, 2, 1]),        # 25% of the whole play (2), not of what is left
    (100, [1, "25%"], [1, 25, 25, 25, 24]),
    (1000, [1, "25%"], [1, 250, 250, 250, 249]),
    (3, [1, "25%"], [1, 1, 1]),                  # 25% of 3 is 0: ansible takes 1
    (5, None, [5]),                              # no serial: one batch
    (5, 0, [5]),
    (5, 2, [2, 2, 1]),
    (4, [1, 2], [1, 2, 1]),                      # the last item repeats
    (1, [1, "25%"], [1]),
])
def test_batches_as_ansible_cuts_them(n, serial, expected):
    assert fm.batches(n, serial) == expected
    assert sum(fm.batches(n, serial)) == n


@pytest.mark.parametrize("b, forks, host_s, cpu_s, cores, upload, uplink, seconds, bound", [
    (25, 10, 100.0, 1.0, 2, 0, 0.0, 300.0, "forks"),       # 3 waves of workers
    (10, 10, 100.0, 1.0, 2, 0, 0.0, 100.0, "forks"),       # exactly one wave
    (11, 10, 100.0, 1.0, 2, 0, 0.0, 200.0, "forks"),       # one host over: a second wave
    (25, 10, 10.0, 5.0, 2, 0, 0.0, 62.5, "cpu"),           # 25 hosts' CPU on 2 cores > 3 waves of 10 s
    (25, 10, 10.0, 1.0, 2, 10**9, 10**8, 250.0, "uplink"),  # 25 GB at 100 MB/s
    (1, 10, 10.0, 30.0, 2, 0, 0.0, 15.0, "cpu"),
    (4, 10, 8.0, 4.0, 2, 0, 0.0, 8.0, "forks"),            # a tie goes to forks
])
def test_batch_time_takes_the_bound_that_binds(b, forks, host_s, cpu_s, cores, upload, uplink, seconds, bound):
    got = fm.batch_time(b, forks, host_s, cpu_s, cores, upload, uplink)
    assert got.seconds == pytest.approx(seconds)
    assert got.bound == bound


def test_estimate_sums_the_batches_and_the_startup():
    e = fm.estimate(10, [1, "25%"], forks=10, host_s=60.0, cpu_s=1.0, cores=2,
                    upload_bytes=1000, uplink_bytes_s=1e9, startup_s=5.0)
    assert [b.hosts for b in e.batches] == [1, 2, 2, 2, 2, 1]
    assert e.wall_s == pytest.approx(5.0 + 6 * 60.0)    # six batches, each one wave
    assert e.upload_bytes == 10 * 1000
    assert e.bounds() == {"forks": 6}


def test_estimate_turns_cpu_bound_with_big_batches():
    e = fm.estimate(100, [1, "25%"], forks=10, host_s=10.0, cpu_s=4.0, cores=2)
    # the canary: max(10, 2) = 10; each 25-host batch: max(3 * 10, 25 * 4 / 2 = 50) = 50; the 24: 48
    assert e.wall_s == pytest.approx(10 + 50 * 3 + 48)
    assert e.bounds() == {"forks": 1, "cpu": 4}


def test_reads_the_projects_serial_and_forks():
    assert fm.read_serial((REPO / "playbooks" / "deploy.yml").read_text()) == [1, "25%"]
    assert fm.read_forks((REPO / "ansible.cfg").read_text()) == 10


@pytest.mark.parametrize("text, expected", [
    ("- hosts: all\n  serial: 3\n", 3),
    ("- hosts: all\n  serial: \"{{ s | default(['10%']) }}\"\n", ["10%"]),
    ("- hosts: all\n  serial: '30%'\n", "30%"),
    ("- hosts: all\n  become: true\n", None),
])
def test_read_serial(text, expected):
    assert fm.read_serial(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("[defaults]\nforks = 25\n", 25),
    ("[defaults]\ntimeout = 60\n", 5),     # ansible-core's default
])
def test_read_forks(text, expected):
    assert fm.read_forks(text) == expected
