"""One definition of "same CPU": the role (nnpack_facts) and the service (drift guard) agree.

Each pair of cpu_pairs.yml goes through both sides' own code:
  * the role: the module's fact building (module_utils/nnpack_verdict.py, imported as Ansible
    imports it) gives each CPU its fingerprint, and cpu_record.same_cpu (the rule the module's
    decision applies) compares the records;
  * the service: drift.compare of the record the role writes for the first CPU
    (cpu_record.make_record) with drift.describe of the second, as the service describes the CPU it starts on.
"""
import copy
import os
import sys
from pathlib import Path

import pytest
import yaml

from torch_backend import cpu_identity, cpu_record, drift

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module"))
from nnpack_facts_helpers import MODULE_UTILS, import_module_utils, role_record  # noqa: E402

verdict_rules = import_module_utils("nnpack_verdict")

TABLE = yaml.safe_load(Path(__file__).with_name("cpu_pairs.yml").read_text())
PAIRS = TABLE["pairs"]
RES = {"rc": 0, "stdout": "", "stderr": "", "duration": 1.0, "timed_out": False}


def evidence(pair, side):
    ev = copy.deepcopy(TABLE["bases"][pair.get("base", "xeon")])
    for key, value in (pair.get(side) or {}).items():
        if isinstance(value, dict) and isinstance(ev.get(key), dict):
            ev[key].update(value)
        else:
            ev[key] = value
    return ev


def module_facts(ev):
    """nnpack_facts' facts for a probe that saw this evidence (torch answered yes)."""
    rec = dict(ev, stage="done", torch_version="2.13.0+cpu", nnpack_available=True)
    return verdict_rules.verdict("/opt/app/venv/bin/python", 180, [], dict(RES), rec)


def test_one_file_serves_both_sides():
    """module_utils/cpu_identity.py is the service package's file, not a copy."""
    link = MODULE_UTILS / "cpu_identity.py"
    assert link.is_symlink()
    assert os.path.realpath(link) == os.path.realpath(cpu_identity.__file__)
    assert os.path.realpath(import_module_utils("cpu_identity").__file__) == os.path.realpath(cpu_identity.__file__)
    record_link = MODULE_UTILS / "cpu_record.py"
    assert record_link.is_symlink()
    assert os.path.realpath(import_module_utils("cpu_record").__file__) == os.path.realpath(cpu_record.__file__)
    assert drift.load_record is cpu_record.load_record and drift.FLAGS == cpu_record.RECORD_FLAGS


@pytest.mark.parametrize("pair", PAIRS, ids=[p["id"] for p in PAIRS])
def test_role_and_service_agree_on_same_cpu(pair):
    old_ev, new_ev = evidence(pair, "recorded"), evidence(pair, "current")

    old_facts, new_facts = module_facts(old_ev), module_facts(new_ev)
    role_same = old_facts["fingerprint"] == new_facts["fingerprint"]
    # the rule the role's decision applies to the record it wrote and the CPU it probes now
    assert cpu_record.same_cpu(role_record(old_facts), role_record(new_facts)) is role_same

    current = drift.describe(new_ev, new_ev["torch_cpu_capability"])
    differences = drift.compare(role_record(old_facts), current)
    service_same = all(d["field"] == "cpu_capability" for d in differences)

    # the service computes the fingerprint the role would record for the CPU it runs on
    assert current["fingerprint"] == new_facts["fingerprint"]
    assert (role_same, service_same) == (pair["same_cpu"], pair["same_cpu"]), differences
    assert bool(differences) is pair["drift"], differences
    if not pair["same_cpu"]:
        assert {"field": "fingerprint", "recorded": old_facts["fingerprint"],
                "current": new_facts["fingerprint"]} in differences


def test_table_covers_what_the_issue_names():
    ids = {p["id"] for p in PAIRS}
    assert {"same-cpu", "stepping-only", "avx512f-lost", "brand-string-change", "cache-leaves-hidden",
            "capability-only-host-cpuinfo-under-qemu-user"} <= ids
