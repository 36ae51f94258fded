"""NNPACK on a CPU where it cannot initialize, for real: qemu-user, -cpu Nehalem.

Nehalem has no AVX2/FMA3, so NNPACK's init returns "unsupported hardware" and
torch 2.13 prints "Could not initialize NNPACK!" on every batch-1 Conv2d that
oneDNN declines, which includes the conv2d-selftest model. Each test runs one
emulated server (about a minute on a small machine).
"""

import platform
import shutil

import pytest

from conftest import NNPACK_WARNING, QEMU_NEHALEM_ARGS, ServerProcess, assert_selftest_answers

QEMU = shutil.which("qemu-x86_64-static")
pytestmark = [
    pytest.mark.slow, pytest.mark.qemu_user,
    pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                       reason="needs qemu-x86_64-static on an x86_64 host"),
]
INFERENCES = 20


def run_emulated(tmp_path, use_nnpack):
    srv = ServerProcess(tmp_path, {"USE_NNPACK": use_nnpack},
                        wrapper=[QEMU, *QEMU_NEHALEM_ARGS]).start()
    try:
        srv.wait_ready(timeout=900)
        assert_selftest_answers(srv, INFERENCES, timeout=120)
        _, meta = srv.get_json("/v2")
        metrics = srv.metrics()
        assert srv.terminate(timeout=120) == 0, srv.stderr
        return srv.stderr, meta, metrics
    finally:
        srv.kill()


def startup_line(stderr):
    (line,) = [ln for ln in stderr.splitlines() if "starting torch-backend" in ln]
    return line


def test_use_nnpack_0_keeps_the_log_clean(tmp_path):
    stderr, meta, _ = run_emulated(tmp_path, "0")
    assert stderr.count(NNPACK_WARNING) == 0, stderr
    line = startup_line(stderr)
    assert "nnpack=disabled (env: USE_NNPACK=0)" in line
    assert "cpu_capability=DEFAULT" in line  # proves the emulated CPU really lacks AVX2
    assert meta["nnpack"] == {"enabled": False, "decided_by": "env", "reason": "USE_NNPACK=0",
                              "cpu_capability": "DEFAULT"}


def test_use_nnpack_1_warns_on_every_conv(tmp_path):
    # The control: the same run with NNPACK left on does fill the log, so the
    # zero counts in the other tests mean something.
    stderr, meta, metrics = run_emulated(tmp_path, "1")
    assert stderr.count(NNPACK_WARNING) >= INFERENCES, stderr
    assert "nnpack=enabled (env: USE_NNPACK=1)" in startup_line(stderr)
    assert "torch_backend_nnpack_enabled 1" in metrics


def test_auto_probes_and_disables(tmp_path):
    stderr, meta, metrics = run_emulated(tmp_path, None)
    assert stderr.count(NNPACK_WARNING) == 0, stderr
    assert "nnpack=disabled (auto: probe: Unsupported hardware)" in startup_line(stderr)
    assert meta["nnpack"]["enabled"] is False and meta["nnpack"]["decided_by"] == "auto"
    assert "torch_backend_nnpack_enabled 0" in metrics
