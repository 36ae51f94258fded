"""torch_backend_verify against a real torch-backend process on 127.0.0.1.

The journal check needs systemd, which this controller does not run as PID 1:
these tests pass unit='' and the journal part is exercised by the Molecule scenarios.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROLE

MODULE = ROLE / "library" / "torch_backend_verify.py"
PACKAGE = ROLE / "files" / "torch-backend"

sys.path.insert(0, str(ROLE / "filter_plugins"))
import selftest  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service():
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(PACKAGE), PYTHONDONTWRITEBYTECODE="1", TORCH_BACKEND_PORT=str(port),
               TORCH_BACKEND_MODEL_DIR="/nonexistent", USE_NNPACK="0")
    proc = subprocess.Popen([sys.executable, "-m", "torch_backend", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=30)


def run_module(tmp_path, **args):
    argfile = tmp_path / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    out = subprocess.run([sys.executable, str(MODULE), str(argfile)], capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout)


def test_verified_when_numbers_match(service, tmp_path):
    x = selftest.selftest_input(8)
    result = run_module(tmp_path, url=service, input=x, expected=selftest.conv2d_reference(x), unit="",
                        requests=3, ready_timeout=240)
    assert result["verified"] is True, result
    assert result["max_abs_error"] == 0
    assert result["latency_ms"]["requests"] == 3 and result["latency_ms"]["p50"] > 0
    assert result["server"]["name"] == "torch-backend"


def test_not_verified_when_one_number_is_off(service, tmp_path):
    x = selftest.selftest_input(8)
    expected = selftest.conv2d_reference(x)
    expected[17] += 1.0
    result = run_module(tmp_path, url=service, input=x, expected=expected, unit="", ready_timeout=240)
    assert result["verified"] is False
    assert "differs from the controller reference" in result["problems"][0]


def test_not_verified_when_nothing_listens(tmp_path):
    x = selftest.selftest_input(8)
    start = time.monotonic()
    result = run_module(tmp_path, url=f"http://127.0.0.1:{free_port()}", input=x,
                        expected=selftest.conv2d_reference(x), unit="", ready_timeout=2)
    assert result["verified"] is False and "not ready" in result["problems"][0]
    assert time.monotonic() - start < 30


def test_check_mode_does_nothing(tmp_path):
    x = selftest.selftest_input(8)
    result = run_module(tmp_path, url="http://127.0.0.1:1", input=x, expected=[0.0], unit="", _ansible_check_mode=True)
    assert result["verified"] is None and result["changed"] is False
