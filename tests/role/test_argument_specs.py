"""meta/argument_specs.yml and defaults/main.yml describe the same variables."""
import re

import yaml

from conftest import ROLE, ROOT


def load(path):
    return yaml.safe_load(path.read_text())


def test_every_default_has_a_spec_with_the_same_default():
    defaults = load(ROLE / "defaults" / "main.yml")
    options = load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options), set(defaults) ^ set(options)
    for name, value in defaults.items():
        assert options[name].get("default") == value, name
        assert options[name].get("description"), name


def test_every_variable_is_prefixed():
    defaults = load(ROLE / "defaults" / "main.yml")
    assert all(name.startswith("pytorch_backend_") for name in defaults)


def test_role_requirements_match_the_wheelhouse_pins():
    # the wheelhouse is built for the controller's Python, 3.11: its set is what it must carry
    pins = [line.strip() for line in (ROOT / "requirements" / "target.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    defaults = load(ROLE / "defaults" / "main.yml")
    current = defaults["pytorch_backend_requirement_sets"]["3.11"]
    for requirement in current:
        assert requirement in pins, f"{requirement} is not in requirements/target.txt"
    assert any(re.match(r"^torch==", r) for r in current)
    assert defaults["pytorch_backend_requirements"] == []


ENTRY_POINTS = {"main", "verify_only", "rollback_release", "audit", "remove"}


def test_every_entry_point_has_a_spec_and_shares_mains_definitions():
    specs = load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]
    entry_points = {p.stem for p in (ROLE / "tasks").glob("*.yml")}
    # internal steps live in tasks/steps/; what stands in tasks/ is called from playbooks
    assert entry_points == ENTRY_POINTS == set(specs), (entry_points, set(specs))
    for name, spec in specs.items():
        assert spec.get("short_description") and spec.get("options"), name
        for option, definition in spec["options"].items():
            assert definition == specs["main"]["options"][option], (name, option)


def test_every_variable_an_entry_point_reads_is_in_its_spec():
    specs = load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]
    for name in ENTRY_POINTS - {"main"}:
        text, seen = (ROLE / "tasks" / f"{name}.yml").read_text(), set()
        while set(re.findall(r"steps/([a-z_]+\.yml)", text)) - seen:
            step = sorted(set(re.findall(r"steps/([a-z_]+\.yml)", text)) - seen)[0]
            seen.add(step)
            text += (ROLE / "tasks" / "steps" / step).read_text()
        used = set(re.findall(r"\bpytorch_backend_[a-z0-9_]+", text)) & set(specs["main"]["options"])
        assert used <= set(specs[name]["options"]), (name, sorted(used - set(specs[name]["options"])))
