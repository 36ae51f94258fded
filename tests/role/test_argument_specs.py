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
    pins = [line.strip() for line in (ROOT / "requirements" / "target.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    defaults = load(ROLE / "defaults" / "main.yml")
    for requirement in defaults["pytorch_backend_requirements"]:
        assert requirement in pins, f"{requirement} is not in requirements/target.txt"
    assert any(re.match(r"^torch==", r) for r in defaults["pytorch_backend_requirements"])
