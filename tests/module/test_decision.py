"""The USE_NNPACK decision as a table (decision_cases.yml), and nnpack_facts deciding with record_file.

The table tests module_utils/nnpack_decision.py's `decide` directly (no process); the module
runs at the end are the real nnpack_facts with a record on disk.
"""
import copy
import json
from pathlib import Path

import pytest
import yaml

from nnpack_facts_helpers import NO_TORCH_PYTHON, import_module_utils, run_module

decision = import_module_utils("nnpack_decision")
cpu_record = import_module_utils("cpu_record")

TABLE = yaml.safe_load(Path(__file__).with_name("decision_cases.yml").read_text())
CASES = TABLE["cases"]
DECISION_KEYS = {"record", "previous", "kept", "cpu_moved", "use_nnpack_off", "predicted", "messages"}


def facts_of(case):
    given = dict(case["facts"])
    facts = copy.deepcopy(TABLE["cpus"][given.pop("cpu")])
    facts.update(reason="r")
    facts.update(given)
    return facts


def previous_of(case):
    given = case.get("previous")
    if given is None:
        return {}
    if isinstance(given, str):
        return copy.deepcopy(TABLE["records"][given])
    given = dict(given)
    record = copy.deepcopy(TABLE["records"][given.pop("from")]) if "from" in given else {}
    record.update(given)
    return record


def run_case(case):
    return decision.decide(facts_of(case), previous_of(case), case.get("probed", True),
                           check_mode=case.get("check_mode", False), host=case.get("host", "web1"),
                           release=case.get("release", ""))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_decision_case(case):
    facts, previous, out = facts_of(case), previous_of(case), case["out"]
    got = run_case(case)
    assert set(got) == DECISION_KEYS
    for key, value in out["record"].items():
        assert got["record"][key] == value, key
    assert got["kept"] is out["kept"]
    assert got["cpu_moved"] is out["cpu_moved"]
    assert got["previous"] == previous
    assert got["predicted"] is (not case.get("probed", True))
    assert got["use_nnpack_off"] is (got["record"]["use_nnpack"] == "0")
    if got["kept"]:
        assert got["record"] == previous
    else:
        named = ["probed_release"] if case.get("release") and case.get("probed", True) else []
        assert list(got["record"]) == ["fingerprint", "cpu_model", "cpu_flags", "cpu_capability", "status",
                                       "available", "use_nnpack"] + named
        assert got["record"]["fingerprint"] == facts["fingerprint"]
    assert [{m["level"]: m["text"]} for m in got["messages"]] == out["messages"]
    if "record_json" in out:
        assert cpu_record.record_text(got["record"]) == out["record_json"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_record_file_is_what_ansible_renders(case):
    """cpu_record.record_text gives the bytes render.yml writes: `to_nice_json` and a newline."""
    from ansible.plugins.filter.core import FilterModule

    to_nice_json = FilterModule().filters()["to_nice_json"]
    record = run_case(case)["record"]
    assert cpu_record.record_text(record) == to_nice_json(record) + "\n"


def test_use_nnpack_is_unset_only_for_a_true_verdict():
    facts = facts_of(CASES[0])
    for available in (True, False, None, "yes", "true", 1):
        record = decision.decide(dict(facts, available=available), {}, True)["record"]
        assert record["use_nnpack"] == ("" if available is True else "0"), available


def test_table_covers_every_message_and_outcome():
    texts = [text for c in CASES for m in c["out"]["messages"] for text in m.values()]
    for part in ("USE_NNPACK=0 added", "USE_NNPACK=0 removed", "USE_NNPACK unchanged (0)",
                 "USE_NNPACK unchanged (unset)", "same CPU as recorded, so the recorded verdict stays",
                 "writing USE_NNPACK=0, which is always safe", "(check mode builds none)",
                 "web1: no release to probe with yet, so"):
        assert any(part in t for t in texts), part
    assert {(c["out"]["kept"], c["out"]["cpu_moved"]) for c in CASES} >= {(True, False), (False, True),
                                                                          (False, False)}


def test_cases_have_unique_ids():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))


# --- nnpack_facts with record_file: the real module, a record on disk -------------------------------
# The probed interpreter has no torch (torch_missing: undecided), which keeps these runs short.

@pytest.fixture(scope="module")
def this_host(module_tmp):
    """nnpack_facts' facts for this host's CPU."""
    return run_module(module_tmp, {"python": NO_TORCH_PYTHON}).facts


def decide_on_host(tmp_path, record_text, **options):
    path = tmp_path / "cpu-record.json"
    if record_text is not None:
        path.write_text(record_text)
    check_mode = options.pop("_check", False)
    run = run_module(tmp_path, dict({"python": NO_TORCH_PYTHON, "record_file": str(path), "host_name": "web1"},
                                    **options), check_mode=check_mode)
    assert run.rc == 0, run.stderr
    assert "decision" not in run.result["ansible_facts"]
    return run


def test_module_keeps_the_verdict_of_this_cpu(tmp_path, this_host):
    record = dict(cpu_record.make_record(this_host, True), status="supported")
    run = decide_on_host(tmp_path, cpu_record.record_text(record))
    got = run.result["decision"]
    assert run.facts["status"] == "torch_missing"
    assert (got["kept"], got["cpu_moved"], got["record"]) == (True, False, record)
    assert got["messages"] == [{"level": "warning", "text": (
        "WARNING: NNPACK could not be probed on web1 (torch_missing: %s); same CPU as recorded, so the recorded "
        "verdict stays (supported, USE_NNPACK unset)." % run.facts["reason"])}]
    assert not run.result.get("warnings")


def test_module_without_a_record(tmp_path):
    got = decide_on_host(tmp_path, None).result
    assert (got["decision"]["previous"], got["decision"]["record"]["use_nnpack"]) == ({}, "0")
    assert not got.get("warnings")


@pytest.mark.parametrize("text,problem", [("[1, 2]\n", "not a JSON object but list"),
                                          ("{not json", "not valid JSON")])
def test_module_warns_about_an_unusable_record(tmp_path, text, problem):
    run = decide_on_host(tmp_path, text)
    assert run.result["decision"]["previous"] == {}
    assert problem in json.dumps(run.result["warnings"])


def test_module_predicts_in_check_mode(tmp_path, this_host):
    other = dict(cpu_record.make_record(this_host, False), fingerprint="0123456789abcdef", cpu_model="Other CPU")
    run = decide_on_host(tmp_path, cpu_record.record_text(other), probed=False, _check=True)
    got = run.result["decision"]
    assert (got["predicted"], got["kept"], got["cpu_moved"]) == (True, False, True)
    assert got["record"]["available"] is this_host["predicted_available"]
    assert got["messages"][0]["text"].startswith("web1: no release to probe with yet (check mode builds none), so ")
    assert got["messages"][1]["text"].startswith("CPU changed from Other CPU (0123456789abcdef) to ")


def test_module_without_record_file_decides_nothing(tmp_path):
    assert "decision" not in run_module(tmp_path, {"python": NO_TORCH_PYTHON}).result
