"""The switch's rules (filter_plugins/switch_rules.py): why torch-backend restarts, whether it is
handed over warm, and whether the socket is kept for that. Each case of switch_rules_cases.yml is
run twice: on the filters in Python, and through Ansible on the task and the vars that call them
(tasks/steps/switch.yml, vars/main.yml), so that what the table says is what a deploy does, message
texts included."""
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from conftest import ROLE, run_playbook

spec = importlib.util.spec_from_file_location("pytorch_backend_filter_switch_rules",
                                              ROLE / "filter_plugins" / "switch_rules.py")
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
FILTERS = plugin.FilterModule().filters()

TABLE = yaml.safe_load(Path(__file__).with_name("switch_rules_cases.yml").read_text())
FILE_WORDS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["_pytorch_backend_file_words"]
NAME_TASK = "Name why torch-backend must restart"


def restart_case(case):
    """A restart_reasons row with the table's defaults filled in."""
    return {"id": case["id"], "host": dict(TABLE["host"], **case.get("host", {})),
            "release_changed": case.get("release_changed", False), "release_id": case.get("release_id", "r2"),
            "files_changed": case.get("files_changed", []), "reasons": case["reasons"]}


def warm_case(case):
    """A warm_handover row with the table's defaults filled in (`candidate` stays absent when absent)."""
    return {"files_changed": ["env"], "tried": False, "min_mb": 512, **case,
            "host": dict(TABLE["host"], **case.get("host", {}))}


RESTARTS = [restart_case(c) for c in TABLE["restart_reasons"]]
WARMS = [warm_case(c) for c in TABLE["warm_handover"]]


def test_the_table_has_one_row_per_id():
    ids = [c["id"] for c in RESTARTS + WARMS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", RESTARTS, ids=[c["id"] for c in RESTARTS])
def test_restart_reasons(case):
    assert FILTERS["pytorch_backend_restart_reasons"](
        case["host"], case["release_changed"], case["release_id"], case["files_changed"], FILE_WORDS) == case["reasons"]


@pytest.mark.parametrize("case", WARMS, ids=[c["id"] for c in WARMS])
def test_warm_handover(case):
    kept = FILTERS["pytorch_backend_socket_kept"](case["host"], case["files_changed"])
    assert kept is case["socket_kept"]
    # as vars/main.yml hands them over: `verified | default(false)`, the minimum `| int`
    verified = case["candidate"].get("verified", False) if "candidate" in case else False
    assert FILTERS["pytorch_backend_warm_handover"](case["host"], kept, verified, case["tried"],
                                                    int(case["min_mb"])) is case["warm"]


def test_an_unknown_file_key_is_an_error_not_a_word_left_out():
    with pytest.raises(KeyError):
        FILTERS["pytorch_backend_restart_reasons"](TABLE["host"], False, "r2", ["env", "new"], FILE_WORDS)


def switch_play(dest):
    """A play with the role's defaults and vars that runs switch.yml's task NAME_TASK, as written
    there, for each restart case, and takes the socket and handover vars for each warm case; it
    writes what they gave to `dest` as JSON."""
    (named,) = [t for t in yaml.safe_load((ROLE / "tasks" / "steps" / "switch.yml").read_text())
                if t.get("name") == NAME_TASK]
    named = dict(named, loop="{{ restart_cases }}", loop_control={"label": "{{ item.id }}"}, register="named",
                 vars=dict(named.get("vars", {}), _pytorch_backend_host="{{ item.host }}",
                           _pytorch_backend_release_changed="{{ item.release_changed }}",
                           _pytorch_backend_release_id="{{ item.release_id }}",
                           _pytorch_backend_files_changed="{{ item.files_changed }}"))
    warm_vars = {"_pytorch_backend_host": "{{ item.host }}", "_pytorch_backend_files_changed": "{{ item.files_changed }}",
                 "_pytorch_backend_try_candidate": "{{ item.tried }}",
                 "pytorch_backend_candidate_min_available_mb": "{{ item.min_mb }}"}
    keep_warm = {"warm": "{{ warm | default({}) | combine({item.id: {'socket_kept': _pytorch_backend_socket_kept,"
                         " 'warm': _pytorch_backend_warm_handover}}) }}"}
    return [{
        "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "vars": {"role_path": str(ROLE)},
        "tasks": [
            named,
            {"name": "Take the handover vars after a candidate ran",
             "loop": "{{ warm_cases | selectattr('candidate', 'defined') | list }}", "loop_control": {"label": "{{ item.id }}"},
             "vars": dict(warm_vars, _pytorch_backend_candidate_result="{{ item.candidate }}"),
             "ansible.builtin.set_fact": keep_warm},
            # _pytorch_backend_candidate_result undefined, as where candidate.yml did not run
            {"name": "Take the handover vars where no candidate ran",
             "loop": "{{ warm_cases | rejectattr('candidate', 'defined') | list }}", "loop_control": {"label": "{{ item.id }}"},
             "vars": warm_vars, "ansible.builtin.set_fact": keep_warm},
            {"name": "Write what they gave",
             "ansible.builtin.copy": {"dest": str(dest), "mode": "0600", "content": (
                 "{{ {'restart': named.results | map(attribute='ansible_facts._pytorch_backend_restart_reasons') | list,"
                 " 'warm': warm} | to_json }}")}},
        ],
    }]


def run_through_ansible(tmp_path, restarts, warms):
    """What the role's task and vars give for these cases: {'restart': [reasons, ...], 'warm': {id: {...}}}."""
    dest = tmp_path / "switch_rules.json"
    result = run_playbook(tmp_path, json.dumps(switch_play(dest)),
                          extra_vars={"restart_cases": restarts, "warm_cases": warms})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads(dest.read_text())


@pytest.fixture(scope="module")
def through_ansible(tmp_path_factory):
    return run_through_ansible(tmp_path_factory.mktemp("switch_rules"), RESTARTS, WARMS)


def test_the_task_and_vars_give_what_the_table_says(through_ansible):
    assert dict(zip([c["id"] for c in RESTARTS], through_ansible["restart"])) == {c["id"]: c["reasons"] for c in RESTARTS}
    assert through_ansible["warm"] == {c["id"]: {"socket_kept": c["socket_kept"], "warm": c["warm"]} for c in WARMS}


@pytest.mark.parametrize("mem, minimum, fits", [
    (2048, 512, True), (512, 512, True), (511, 512, False), (0, 0, True), (None, 0, False), (None, 512, False)])
def test_memory_fits_the_candidate_and_the_warm_handover_alike(mem, minimum, fits):
    """One rule for both (tasks/steps/candidate.yml, warm_handover): unknown memory never fits."""
    host = dict(TABLE["host"], mem_available_mb=mem)
    assert FILTERS["pytorch_backend_memory_fits"](host, minimum) is fits
    kept = FILTERS["pytorch_backend_socket_kept"](host, [])
    assert FILTERS["pytorch_backend_warm_handover"](host, kept, False, False, minimum) is (fits and kept)
