"""One set of model rules: the role's preflight and the service agree on every model.

The same table of names and metadata goes to both sides through their own entry
points: the filter plugin's model_problems (what preflight runs on the controller)
and the service's check_name / check_metadata (what scan_model_dir and
load_file_model run before loading). Both use torch_backend/model_rules.py; this
proves the wiring and the verdicts. Before that file existed they disagreed on
upper-case names, upper-case checksums and multi-line tensor names.

What only the controller checks stays out of the table: every key present
(the service takes metadata without a sha256) and `file` being a path.
"""

import json

import pytest

from conftest import role_filter_plugin
from torch_backend import model_rules, models

plugin = role_filter_plugin("model_specs")

SHA = "0123456789abcdef" * 4
T = {"name": "x", "datatype": "FP32", "shape": [-1, 3]}
GOOD = {"inputs": [T], "outputs": [dict(T, name="y")], "sha256": SHA}

# (name, changes to GOOD, accepted?)
TABLE = [
    ("m", {}, True),
    ("resnet-50.v1_a", {}, True),
    ("0", {}, True),
    ("a" * 128, {}, True),
    ("m", {"inputs": [dict(T, datatype="INT64", shape=[-1])]}, True),
    ("m", {"inputs": [T, dict(T, name="z", datatype="FP64", shape=[1, 2, 3])]}, True),
    ("m", {"outputs": [T]}, True),   # an output may share an input's name
    # names
    ("Model", {}, False),
    ("RESNET18", {}, False),
    ("mA", {}, False),
    ("-m", {}, False),
    (".m", {}, False),
    ("_m", {}, False),
    ("m m", {}, False),
    ("m/x", {}, False),
    ("../m", {}, False),
    ("m\n", {}, False),
    ("", {}, False),
    ("a" * 129, {}, False),
    ("modèle", {}, False),
    ("conv2d-selftest", {}, False),
    # checksums
    ("m", {"sha256": SHA.upper()}, False),
    ("m", {"sha256": SHA[:32] + SHA[32:].upper()}, False),
    ("m", {"sha256": SHA[:-1]}, False),
    ("m", {"sha256": SHA + "0"}, False),
    ("m", {"sha256": SHA + "\n"}, False),
    ("m", {"sha256": "g" * 64}, False),
    ("m", {"sha256": ""}, False),
    ("m", {"sha256": 123}, False),
    # inputs and outputs
    ("m", {"inputs": "x"}, False),
    ("m", {"inputs": T}, False),
    ("m", {"inputs": []}, False),
    ("m", {"inputs": ["x"]}, False),
    ("m", {"inputs": [{}]}, False),
    ("m", {"inputs": [{"name": "x"}]}, False),
    ("m", {"outputs": 5}, False),
    ("m", {"inputs": [dict(T, datatype="FLOAT")]}, False),
    ("m", {"inputs": [dict(T, datatype="fp32")]}, False),
    ("m", {"inputs": [dict(T, datatype=["FP32"])]}, False),
    ("m", {"inputs": [dict(T, shape="1,3")]}, False),
    ("m", {"inputs": [dict(T, shape=[])]}, False),
    ("m", {"inputs": [dict(T, shape=[0, 3])]}, False),
    ("m", {"inputs": [dict(T, shape=[-2])]}, False),
    ("m", {"inputs": [dict(T, shape=[1.0])]}, False),
    ("m", {"inputs": [dict(T, shape=[True, 3])]}, False),
    ("m", {"inputs": [dict(T, shape=[None])]}, False),
    ("m", {"outputs": [dict(T, name="")]}, False),
    ("m", {"outputs": [dict(T, name="a\nb")]}, False),
    ("m", {"outputs": [dict(T, name=5)]}, False),
    ("m", {"inputs": [T, T]}, False),
]


def role_accepts(name, meta):
    return plugin.model_problems([dict(meta, name=name, file="/srv/models/m.pt")]) == []


def service_accepts(name, meta):
    try:
        models.check_name(name)
        models.check_metadata(name, meta)
    except models.ModelError:
        return False
    return True


@pytest.mark.parametrize("name,changes,accepted", TABLE,
                         ids=[f"{n!r}:{json.dumps(c, default=str)}"[:70] for n, c, _ in TABLE])
def test_role_and_service_agree(name, changes, accepted):
    meta = dict(GOOD, **changes)
    assert (role_accepts(name, meta), service_accepts(name, meta)) == (accepted, accepted)


def test_the_problem_reads_the_same_on_both_sides():
    (rule,) = model_rules.name_problems("Model")
    problems = plugin.model_problems([dict(GOOD, name="Model", file="/srv/models/m.pt")])
    with pytest.raises(models.ModelError) as info:
        models.check_name("Model")
    assert problems == ["model 0 " + rule]
    assert str(info.value) == "model 'Model': " + rule


def test_service_datatypes_are_the_rules_datatypes():
    assert set(models.DATATYPES) == set(model_rules.DATATYPES)


def test_model_dir_scan_applies_the_name_rule(tmp_path):
    for ext in (".pt", ".json"):
        (tmp_path / f"Upper{ext}").write_text("{}")
    with pytest.raises(models.ModelError, match="lower-case"):
        models.scan_model_dir(str(tmp_path))
