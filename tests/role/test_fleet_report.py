"""The per-host table (plugins/callback/fleet_report.py) ends every deploy, also one a failing host stopped.

Runs the real ansible-playbook on fleet_report_standin.yml (a stand-in for deploy.yml and the role that
sets the same custom stats) against 9 local-connection hosts, with the project's ansible.cfg and with the
environment Molecule gives its runs. 9 hosts make the default batches visible: the canary h1, then a
quarter of 9 (2 hosts) at a time: [h1] [h2 h3] [h4 h5] [h6 h7] [h8 h9].
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STANDIN = HERE / "fleet_report_standin.yml"
DEPLOY = ROOT / "playbooks" / "deploy.yml"
HOSTS = ["h%d" % i for i in range(1, 10)]
DEFAULT_BATCHES = [["h1"], ["h2", "h3"], ["h4", "h5"], ["h6", "h7"], ["h8", "h9"]]
ROW_RE = re.compile(r"^(h\d+)\s+(not reached|served|rolled_back|kept|failed|unreachable|unverified|checked)\s")
COUNT_RE = re.compile(r"^served \d+, rolled back \d+, kept \d+, failed \d+, unreachable \d+, not reached \d+"
                      r"(, unverified \d+)?(, checked \d+)?$", re.M)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_FILTER_PLUGINS=str(ROOT / "roles" / "pytorch_backend" / "filter_plugins"),
               ANSIBLE_LOCAL_TEMP=str(Path(extra.pop("_tmp")) / "ansible-local"))
    env.update(extra)
    return env


def run(tmp_path, outcomes=None, args=(), playbook=STANDIN, env=None, conv=None, cpu=None):
    """Run `playbook` on h1..h9; `outcomes` maps a host to its standin_outcome or to 'unreachable',
    `conv` a host to the conv_backends summary its service reports on GET /v2, `cpu` to its cpu object."""
    outcomes, conv, cpu = outcomes or {}, conv or {}, cpu or {}
    lines = ["[fleet]"]
    for host in HOSTS:
        outcome = outcomes.get(host)
        if outcome == "unreachable":  # nothing listens on port 1: connection refused
            lines.append(f"{host} ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=1 ansible_user=nobody")
        elif outcome:
            lines.append(f"{host} standin_outcome={outcome}")
        else:
            lines.append(host)
    host_vars = {}
    for host, summary in conv.items():
        host_vars.setdefault(host, {})["standin_conv"] = summary
    for host, budget in cpu.items():
        host_vars.setdefault(host, {})["standin_cpu"] = budget
    for host, values in host_vars.items():  # beside the inventory: Ansible reads host_vars/ there
        (tmp_path / "host_vars").mkdir(exist_ok=True)
        (tmp_path / "host_vars" / f"{host}.json").write_text(json.dumps(values))
    lines += ["[all:vars]", "ansible_connection=local", f"ansible_python_interpreter={sys.executable}"]
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("\n".join(lines) + "\n")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env=env or _env(_tmp=tmp_path))
    return proc, proc.stdout + "\n" + proc.stderr


def report(out):
    """The table's rows {host: outcome}, the lines after the table and the count line."""
    assert "FLEET REPORT" in out, "no per-host table:\n" + out
    after = out.split("FLEET REPORT", 1)[1].splitlines()
    rows, rest = {}, []
    for line in after[1:]:
        if COUNT_RE.match(line):
            assert len(COUNT_RE.findall(out)) == 1, out
            return rows, rest, line
        m = ROW_RE.match(line)
        if m:
            rows[m.group(1)] = m.group(2)
        elif line.strip() and not line.startswith("HOST "):
            rest.append(line)
    raise AssertionError("no count line after the table:\n" + out)


def batches(out):
    """The hosts of each play batch, from the results between the `PLAY [...]` headers."""
    found = []
    for chunk in out.split("PLAY [")[1:]:
        chunk = chunk.split("PLAY RECAP")[0]
        hosts = []
        for host in re.findall(r"^(?:ok|changed|fatal|failed|skipping|unreachable): \[(h\d+)\]", chunk, re.M):
            if host not in hosts:
                hosts.append(host)
        found.append(sorted(hosts, key=lambda h: int(h[1:])))
    return found


def test_standin_batches_are_deploys_and_summary_play_is_gone():
    deploy = yaml.safe_load(DEPLOY.read_text())
    standin = yaml.safe_load(STANDIN.read_text())
    assert deploy[0]["serial"] == standin[0]["serial"] == "{{ pytorch_backend_serial | default([1, '25%']) }}"
    assert deploy[0]["max_fail_percentage"] == standin[0]["max_fail_percentage"]
    assert "default(0)" in deploy[0]["max_fail_percentage"]
    assert not (ROOT / "playbooks" / "summary.yml").exists()
    assert not (ROOT / "playbooks" / "templates" / "fleet_table.j2").exists()
    for playbook in (ROOT / "playbooks").glob("*.yml"):
        assert "summary.yml" not in playbook.read_text(), playbook
    assert "fleet_report" in (ROOT / "ansible.cfg").read_text()


def test_failing_canary_stops_the_rollout_and_the_table_says_so(tmp_path):
    proc, out = run(tmp_path, {"h1": "crash"})
    assert proc.returncode != 0
    assert batches(out) == [["h1"]], out
    rows, rest, counts = report(out)
    assert rows == {"h1": "failed", **{h: "not reached" for h in HOSTS[1:]}}, out
    assert any(line.startswith("h1 (failed)") and "stand-in crash on h1" in line for line in rest), rest
    assert "not reached (the rollout stopped before their batch): h2, h3, h4, h5, h6, h7, h8, h9" in rest
    assert counts == "served 0, rolled back 0, kept 0, failed 1, unreachable 0, not reached 8"


def test_all_served_in_canary_then_quarter_batches(tmp_path):
    proc, out = run(tmp_path)
    assert proc.returncode == 0, out
    assert batches(out) == DEFAULT_BATCHES, out
    rows, rest, counts = report(out)
    assert rows == {h: "served" for h in HOSTS}
    assert rest == []
    assert counts == "served 9, rolled back 0, kept 0, failed 0, unreachable 0, not reached 0"
    assert out.index("PLAY RECAP") < out.index("FLEET REPORT")


def test_rollback_in_a_later_batch_stops_the_batches_after_it(tmp_path):
    proc, out = run(tmp_path, {"h4": "rolled_back"})
    assert proc.returncode != 0
    assert batches(out) == DEFAULT_BATCHES[:3], out
    rows, rest, counts = report(out)
    assert rows == {"h1": "served", "h2": "served", "h3": "served", "h4": "rolled_back", "h5": "served",
                    "h6": "not reached", "h7": "not reached", "h8": "not reached", "h9": "not reached"}, out
    assert "h4 (rolled_back, release r2, serving r1): stand-in rolled_back on h4" in rest
    assert counts == "served 4, rolled back 1, kept 0, failed 0, unreachable 0, not reached 4"


def test_overrides_one_batch_kept_failed_and_unreachable(tmp_path):
    proc, out = run(tmp_path, {"h2": "kept", "h3": "unreachable", "h5": "failed", "h6": "crash"},
                    args=["-e", "pytorch_backend_serial=100%", "-e", "pytorch_backend_max_fail_percentage=100"])
    assert proc.returncode != 0
    assert batches(out) == [HOSTS], out
    rows, rest, counts = report(out)
    assert rows == {"h1": "served", "h2": "kept", "h3": "unreachable", "h4": "served", "h5": "failed",
                    "h6": "failed", "h7": "served", "h8": "served", "h9": "served"}, out
    assert "h2 (kept, release r2, serving r1): stand-in kept on h2" in rest
    assert any(line.startswith('h3 (unreachable): at task "Reach the host"') for line in rest), rest
    assert any(line.startswith('h6 (failed): at task "Fail before any result') for line in rest), rest
    assert counts == "served 5, rolled back 0, kept 1, failed 2, unreachable 1, not reached 0"


def test_a_deploy_with_verification_off_reports_its_hosts_unverified_not_unreached(tmp_path):
    # the role reports through the same step file (main.yml imports it after the switch)
    assert "steps/verify.yml" in (ROOT / "roles/pytorch_backend/tasks/main.yml").read_text()
    proc, out = run(tmp_path, args=["-e", "pytorch_backend_verify=false"])
    assert proc.returncode == 0, out
    assert batches(out) == DEFAULT_BATCHES, out
    rows, rest, counts = report(out)
    assert rows == {h: "unverified" for h in HOSTS}, out
    assert counts == "served 0, rolled back 0, kept 0, failed 0, unreachable 0, not reached 0, unverified 9"
    assert all("pytorch_backend_verify is off" in line for line in rest) and len(rest) == 9, rest
    # VERIFIED is unknown ("-"), not NO: nothing checked it
    h1 = next(line for line in out.split("FLEET REPORT", 1)[1].splitlines() if line.startswith("h1 "))
    assert h1.split()[-3:] == ["-", "-", "-"], h1


def test_a_check_run_reports_its_hosts_checked(tmp_path):
    proc, out = run(tmp_path, args=["--check"])
    assert proc.returncode == 0, out
    rows, rest, counts = report(out)
    assert rows == {h: "checked" for h in HOSTS}, out
    assert counts == "served 0, rolled back 0, kept 0, failed 0, unreachable 0, not reached 0, checked 9"
    assert all("check mode: nothing was changed" in line for line in rest), rest


def test_nothing_printed_for_a_playbook_that_sets_no_targets(tmp_path):
    playbook = tmp_path / "other.yml"
    playbook.write_text("- name: Other\n  hosts: all\n  gather_facts: false\n  tasks:\n"
                        "    - name: Say hello\n      ansible.builtin.debug:\n        msg: hello\n")
    proc, out = run(tmp_path, playbook=playbook)
    assert proc.returncode == 0, out
    assert "FLEET REPORT" not in out
    assert "TASK TIMES" in out


@pytest.fixture
def molecule_env(tmp_path):
    """The environment Molecule gives its runs: its own ansible.cfg, plus provisioner.env."""
    config = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text())
    cfg = tmp_path / "molecule-ansible.cfg"
    cfg.write_text("[defaults]\nhost_key_checking = False\nretry_files_enabled = False\n")
    env = _env(_tmp=tmp_path, ANSIBLE_CONFIG=str(cfg))
    for key, value in config["provisioner"]["env"].items():
        env[key] = str(value).replace("${MOLECULE_PROJECT_DIRECTORY}", str(ROOT))
    return env


def test_molecule_runs_print_the_table_too(tmp_path, molecule_env):
    assert set(molecule_env["ANSIBLE_CALLBACKS_ENABLED"].split(",")) >= {"task_timer", "fleet_report"}
    proc, out = run(tmp_path, {"h1": "crash"}, env=molecule_env)
    assert proc.returncode != 0
    rows, _, counts = report(out)
    assert rows["h1"] == "failed"
    assert counts == "served 0, rolled back 0, kept 0, failed 1, unreachable 0, not reached 8"
    assert "TASK TIMES" in out


def test_a_limited_run_reports_only_the_hosts_in_the_limit(tmp_path):
    # h2 and h4 are outside the limit: neither failed, unreachable nor "not reached"
    proc, out = run(tmp_path, {"h3": "failed", "h2": "crash", "h4": "unreachable"},
                    args=["--limit", "h1:h3:h5", "-e", "pytorch_backend_serial=100%",
                          "-e", "pytorch_backend_max_fail_percentage=100"])
    assert proc.returncode != 0
    rows, rest, counts = report(out)
    assert rows == {"h1": "served", "h3": "failed", "h5": "served"}, out
    assert not [line for line in rest if "h2" in line or "h4" in line], rest
    assert counts == "served 2, rolled back 0, kept 0, failed 1, unreachable 0, not reached 0"


def test_the_table_is_handed_on_as_run_wide_stats_for_awx(tmp_path):
    # AWX and ansible-runner keep the run-wide custom stats (`_run`) as the job's artifacts
    proc, out = run(tmp_path, {"h2": "kept"}, args=["--limit", "h1:h2", "-e", "pytorch_backend_serial=100%",
                                                    "-e", "pytorch_backend_max_fail_percentage=100"],
                    env=_env(_tmp=tmp_path, ANSIBLE_SHOW_CUSTOM_STATS="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json"))
    # the default callback prints them as one line: "\tRUN: {json}"
    line = [line for line in out.splitlines() if line.startswith("\tRUN: ")]
    assert len(line) == 1, out
    stats = json.loads(line[0][len("\tRUN: "):])
    assert sorted(stats["pytorch_backend_targets"]) == ["h1", "h2"]
    fleet = stats["pytorch_backend_fleet"]
    assert sorted(fleet) == ["h1", "h2"]
    assert fleet["h1"]["outcome"] == "served" and fleet["h1"]["serving_release"] == "r2"
    assert fleet["h2"]["outcome"] == "kept" and fleet["h2"]["message"] == "stand-in kept on h2"
    assert fleet["h2"]["serving_release"] == "r1" and fleet["h2"]["release"] == "r2"


def _summary(model_backends, slow2d=()):
    """A GET /v2 conv_backends summary: the built-in self-test (Slow2d at batch 1 on every host,
    never flagged) plus one deployed model with `model_backends` {batch: backend}."""
    return {"mkldnn_enabled": True, "nnpack_enabled": True, "batches": [1, 16], "slow2d": list(slow2d),
            "models": {"conv2d-selftest": {"builtin": True, "layers": 1, "batch_1": {"Slow2d": 1},
                                           "batch_16": {"Mkldnn": 1}},
                       "resnet18": {"builtin": False, "layers": 20,
                                    **{f"batch_{b}": {name: 20} for b, name in model_backends.items()}}}}


def test_conv_column_and_a_warning_for_a_host_on_slow2d(tmp_path):
    proc, out = run(tmp_path, conv={"h1": _summary({1: "Mkldnn", 16: "Mkldnn"}),
                                    "h2": _summary({1: "Slow2d", 16: "NnpackSpatial"}, ["resnet18"])},
                    args=["-e", "pytorch_backend_serial=9"])
    assert proc.returncode == 0, out
    table = out.split("FLEET REPORT", 1)[1].splitlines()
    assert "CONV" in next(line for line in table if line.startswith("HOST"))
    row = {line.split()[0]: line for line in table if ROW_RE.match(line)}
    assert row["h1"].rstrip().endswith(" Mkldnn")
    assert row["h2"].rstrip().endswith(" 1:Slow2d! 16:NnpackSpatial")
    assert row["h3"].rstrip().endswith(" -")      # no summary: the service did not answer
    assert [line for line in table if line.startswith("WARNING")] == [
        "WARNING: h2: Conv2d layers fall to the slow direct path (Slow2d) in resnet18"]


def _load_callback():
    spec = importlib.util.spec_from_file_location("fleet_report_under_test",
                                                  ROOT / "plugins" / "callback" / "fleet_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fleet_report = _load_callback()


def _cpu(budget=2, affinity=2, quota=None, workers=1, intra=2, share=None):
    """A GET /v2 cpu object as torch_backend/server.py's cpu_metadata writes it."""
    return {"budget": budget, "affinity": affinity, "quota_cpus": quota,
            "source": "affinity (no CPU quota in the process's cgroups)" if quota is None
            else "/sys/fs/cgroup/system.slice/torch-backend.service/cpu.max",
            "intra_op_threads": intra, "inter_op_threads": 1, "workers": workers, "throttled_share": share}


def _row(cpu):
    """The row keys report.yml sets from a cpu object (None: the service reported none)."""
    cpu = cpu or {}
    return {"cpu_budget": cpu.get("budget"), "cpu_affinity": cpu.get("affinity"), "cpu_quota": cpu.get("quota_cpus"),
            "workers": cpu.get("workers"), "intra_op_threads": cpu.get("intra_op_threads"),
            "throttled": cpu.get("throttled_share")}


# (what the row carries, BUDGET, THREADS, THROTTLED)
CPU_CASES = [
    pytest.param(_row(_cpu()), "2", "1x2", "-", id="affinity, no quota: the kernel counts no periods"),
    pytest.param(_row(_cpu(budget=1, affinity=4, quota=1.5, intra=1, share=0.372)), "1 (quota)", "1x1", "37%",
                 id="quota under the affinity sets the budget"),
    pytest.param(_row(_cpu(budget=1, affinity=4, quota=1.0, intra=1, share=0.0)), "1 (quota)", "1x1", "0%",
                 id="quota, never throttled"),
    pytest.param(_row(_cpu(budget=2, affinity=2, quota=8.0, share=0.0)), "2", "1x2", "0%",
                 id="quota above the affinity: the affinity sets the budget"),
    pytest.param(_row(_cpu(budget=4, affinity=8, quota=4.0, workers=2, share=1.0)), "4 (quota)", "2x2", "100%",
                 id="two workers, always throttled"),
    pytest.param(_row(_cpu(budget=1, affinity=4, quota=1.0, intra=1, share=0.004)), "1 (quota)", "1x1", "<1%",
                 id="a little throttling is not 0%"),
    pytest.param(_row(_cpu(share=0.995)), "2", "1x2", "100%", id="rounded to the nearest percent"),
    pytest.param(_row(None), "-", "-", "-", id="service without the cpu object"),
    pytest.param({"cpu_model": "Intel Xeon Processor (Haswell)", "latency_ms": 4.2}, "-", "-", "-",
                 id="old row without the keys"),
    pytest.param({"cpu_budget": "2", "cpu_affinity": "4", "cpu_quota": "2.5", "workers": "1",
                  "intra_op_threads": "2", "throttled": "0.372"}, "2 (quota)", "1x2", "37%",
                 id="values templated to text"),
    pytest.param({"cpu_budget": True, "workers": 1, "intra_op_threads": None, "throttled": 1.5}, "-", "-", "-",
                 id="no number: a boolean, a missing half, a share over 1"),
]


@pytest.mark.parametrize("row,budget,threads,throttled", CPU_CASES)
def test_cpu_columns_format(row, budget, threads, throttled):
    assert (fleet_report.cpu_budget(row), fleet_report.threads(row), fleet_report.throttled(row)) == \
        (budget, threads, throttled)


def columns(table):
    """{host: {column: value}} of the table's rows, cut at the header's column starts (BUDGET's "1 (quota)" and
    the header's "P50 MS" hold a space, so whitespace does not split columns)."""
    header = next(line for line in table if line.startswith("HOST "))
    starts = [header.index(name) for name in fleet_report.HEADER]
    rows = {}
    for line in table:
        if ROW_RE.match(line):
            cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
            rows[cells[0]] = dict(zip(fleet_report.HEADER, cells))
    return rows


class _Display:
    def __init__(self):
        self.lines = []

    def banner(self, text):
        self.lines.append(text)

    def display(self, text):
        self.lines.append(text)


class _Stats:
    def __init__(self, fleet, targets):
        self.custom = {"_run": {"pytorch_backend_fleet": fleet, "pytorch_backend_targets": targets}}
        self.failures, self.dark = {"h3": 1}, {}


def test_callback_prints_the_cpu_columns_from_the_rows():
    base = {"outcome": "served", "cpu_model": "Intel Xeon Processor (Haswell)", "avx2": True, "fma": True,
            "nnpack": "supported", "use_nnpack": "unset", "cpu_capability": "AVX2", "verified": True,
            "latency_ms": 4.2, "conv": "Mkldnn"}
    fleet = {"h1": dict(base, **_row(_cpu(budget=1, affinity=4, quota=1.5, intra=1, share=0.372))),
             "h2": dict(base)}  # a row set by a role from before the CPU columns
    callback = fleet_report.CallbackModule()
    callback._display = _Display()
    callback.v2_playbook_on_stats(_Stats(fleet, ["h1", "h2", "h3"]))
    rows = columns(callback._display.lines)
    assert {h: (r["BUDGET"], r["THREADS"], r["THROTTLED"], r["CONV"]) for h, r in rows.items()} == {
        "h1": ("1 (quota)", "1x1", "37%", "Mkldnn"),
        "h2": ("-", "-", "-", "Mkldnn"),
        "h3": ("-", "-", "-", "-")}   # failed before it set a row
    assert rows["h1"]["P50 MS"] == "4.2" and rows["h1"]["VERIFIED"] == "yes"


def test_cpu_columns_from_the_services_cpu_object(tmp_path):
    cpu = {"h1": _cpu(),
           "h2": _cpu(budget=1, affinity=4, quota=1.5, intra=1, share=0.372),
           "h4": _cpu(budget=1, affinity=4, quota=1.0, intra=1, share=0.0)}
    proc, out = run(tmp_path, {"h4": "rolled_back", "h5": "crash"}, cpu=cpu,
                    args=["-e", "pytorch_backend_serial=9", "-e", "pytorch_backend_max_fail_percentage=100"],
                    env=_env(_tmp=tmp_path, ANSIBLE_SHOW_CUSTOM_STATS="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json"))
    assert proc.returncode != 0
    table = out.split("FLEET REPORT", 1)[1].splitlines()
    header = next(line for line in table if line.startswith("HOST "))
    assert header.split()[-5:] == ["MS", "BUDGET", "THREADS", "THROTTLED", "CONV"], header
    rows = columns(table)
    got = {h: (r["OUTCOME"], r["BUDGET"], r["THREADS"], r["THROTTLED"]) for h, r in rows.items()}
    assert got["h1"] == ("served", "2", "1x2", "-"), out
    assert got["h2"] == ("served", "1 (quota)", "1x1", "37%"), out
    assert got["h3"] == ("served", "-", "-", "-"), out           # a service without the cpu object
    # like its P50 MS and CONV: what the verification that failed found
    assert got["h4"] == ("rolled_back", "1 (quota)", "1x1", "0%"), out
    assert got["h5"] == ("failed", "-", "-", "-"), out           # failed before verification
    # the row carries the values raw (numbers and none, not text) for AWX: the callback formats them
    stats = json.loads(next(line for line in out.splitlines() if line.startswith("\tRUN: "))[len("\tRUN: "):])
    h2 = stats["pytorch_backend_fleet"]["h2"]
    assert {k: h2[k] for k in ("cpu_budget", "cpu_affinity", "cpu_quota", "workers", "intra_op_threads",
                               "throttled")} == {"cpu_budget": 1, "cpu_affinity": 4, "cpu_quota": 1.5, "workers": 1,
                                                 "intra_op_threads": 1, "throttled": 0.372}
    assert stats["pytorch_backend_fleet"]["h1"]["throttled"] is None
    assert stats["pytorch_backend_fleet"]["h3"]["cpu_budget"] is None


def test_a_check_run_shows_no_cpu_columns(tmp_path):
    proc, out = run(tmp_path, args=["--check"], cpu={"h1": _cpu(share=0.5)})
    assert proc.returncode == 0, out
    rows = columns(out.split("FLEET REPORT", 1)[1].splitlines())
    assert {(r["OUTCOME"], r["BUDGET"], r["THREADS"], r["THROTTLED"]) for r in rows.values()} == {
        ("checked", "-", "-", "-")}, out
