"""Which requirements a wheelhouse cannot serve to a host's Python (filter_plugins/wheels.py):
what install.yml refuses before the host is touched. File names are the wheels scripts/bootstrap
downloads, and the tag rules pip's own (py3, cpXY, abi3)."""
import importlib.util

import pytest

from conftest import ROLE, ROOT

spec = importlib.util.spec_from_file_location("pytorch_backend_filter_wheels", ROLE / "filter_plugins" / "wheels.py")
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
lacking = plugin.FilterModule().filters()["pytorch_backend_wheels_lacking"]

WHEELS = [
    "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "numpy-2.4.6-cp313-cp313-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "orjson-3.11.5-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "uvicorn-0.39.0-py3-none-any.whl",
    "prometheus_client-0.26.0-py3-none-any.whl",
    "typing_extensions-4.16.0-py3-none-any.whl",
    "cryptography-46.0.0-cp311-abi3-manylinux_2_28_x86_64.whl",
]


@pytest.mark.parametrize("python, expected", [
    # the +cpu label does not stand in the way of a pin without it
    ("3.11", ["orjson==3.11.5"]),
    ("3.13", ["torch==2.13.0"]),
    # 3.12: no wheel of numpy, orjson or torch for it
    ("3.12", ["torch==2.13.0", "numpy==2.4.6", "orjson==3.11.5"]),
])
def test_lists_what_no_wheel_serves_for_that_python(python, expected):
    wanted = ["torch==2.13.0", "numpy==2.4.6", "uvicorn==0.39.0", "orjson==3.11.5", "prometheus-client==0.26.0",
              "Typing.Extensions==4.16.0"]
    assert lacking(WHEELS, wanted, python) == expected


def test_a_pinned_version_must_be_the_wheels():
    assert lacking(WHEELS, ["uvicorn==0.40.0", "uvicorn", "uvicorn[standard]==0.39.0"], "3.11") == ["uvicorn==0.40.0"]


def test_a_stable_abi_wheel_serves_its_python_and_later_ones_only():
    assert lacking(WHEELS, ["cryptography==46.0.0"], "3.13") == []
    assert lacking(WHEELS, ["cryptography==46.0.0"], "3.10") == ["cryptography==46.0.0"]


def test_the_bootstrapped_wheelhouse_serves_debian_13_all_but_torch():
    """scripts/bootstrap's wheelhouse: everything of the 3.13 set but torch, which Debian 13's
    python3-torch provides (pytorch_backend_torch_source: distribution)."""
    wheelhouse = ROOT / ".cache" / "wheelhouse"
    assert any(wheelhouse.glob("torch-*.whl")), "run scripts/bootstrap first"
    names = [p.name for p in wheelhouse.glob("*.whl")]
    pins = [line.strip() for line in (ROOT / "requirements" / "target.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#") and "==" in line]
    assert lacking(names, pins, "3.11") == []
    assert lacking(names, pins, "3.13") == ["torch==2.13.0"]
