"""The verdict rules of nnpack_facts as a table (verdict_cases.yml): probe outcome in, facts out.

Pure: no process is run. The same cases pin the fingerprints of real CPUs and the reasons' wording.
"""
import copy
from pathlib import Path

import pytest
import yaml

from nnpack_facts_helpers import assert_options_documented, import_module_utils, module_docs

verdict_rules = import_module_utils("nnpack_verdict")
nnpack_run = import_module_utils("nnpack_run")

TABLE = yaml.safe_load((Path(__file__).with_name("verdict_cases.yml")).read_text())
CASES = TABLE["cases"]
ALWAYS = {
    "available", "status", "reason", "nnpack_message", "predicted_available", "prediction_method", "cpu_vendor",
    "cpu_model", "cpu_family", "cpu_model_number", "cpu_stepping", "architecture", "cpu_flags", "os_ymm_enabled",
    "os_disabled_flags", "cache_enumerated", "cache_sizes", "proc_cpuinfo_readable", "evidence_source",
    "evidence_interpreter", "fingerprint", "fingerprint_source", "torch_version", "torch_cpu_capability",
    "mkldnn_available", "torch_import_seconds", "python", "python_version", "wrapper", "duration", "cpu_count",
    "probe_rc", "probe_stderr_tail",
}
SOMETIMES = {"cpuid_error", "evidence_python_version"}


def compose(spec):
    """An evidence record: the `evidence` entries named by `from` (in order), then the keys given."""
    if spec is None:
        return None
    spec = copy.deepcopy(spec)
    names = spec.pop("from", [])
    rec = {}
    for name in [names] if isinstance(names, str) else names:
        rec.update(compose(TABLE["evidence"][name]))
    rec.update(spec)
    return rec


def run_case(case):
    given = dict(TABLE["defaults"], **copy.deepcopy(case["in"]))
    res = given["res"]
    if res is not None:
        res = dict(TABLE["defaults"]["res"], **res)
    rec = compose(given.get("rec"))
    if rec is None and res is not None:
        rec = nnpack_run.parse_records(res["stdout"])
    return verdict_rules.verdict(given["python"], given["timeout"], given["wrapper"], res, rec,
                                 compose(given.get("fallback")), given.get("problem"))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_verdict_case(case):
    facts = run_case(case)
    assert ALWAYS <= set(facts) <= ALWAYS | SOMETIMES, set(facts) ^ ALWAYS
    assert facts["status"] in verdict_rules.STATUSES
    assert facts["reason"].endswith(".")
    assert len(facts["fingerprint"]) == 16 and int(facts["fingerprint"], 16) >= 0
    assert (facts["available"] is None) == (facts["status"] in ("torch_missing", "probe_failed")
                                            and facts["available"] is None)
    expected = dict(case["out"])
    for part in expected.pop("reason_has", []):
        assert part in facts["reason"], facts["reason"]
    for key, value in expected.items():
        assert facts[key] == value, (key, facts[key])


def test_every_status_is_in_the_table():
    assert {run_case(c)["status"] for c in CASES} == set(verdict_rules.STATUSES)


def test_cases_have_unique_ids():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))


def test_documented_return_keys_are_the_facts():
    """RETURN documents every fact key and no other (the docs were condensed: keep them whole)."""
    documented = module_docs()["RETURN"]["ansible_facts"]["contains"]["nnpack"]["contains"]
    assert set(documented) == ALWAYS | SOMETIMES
    assert documented["status"]["choices"] == list(verdict_rules.STATUSES)


def test_documented_options_match_argument_spec(monkeypatch):
    assert_options_documented(monkeypatch)
