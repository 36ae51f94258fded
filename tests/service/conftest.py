"""Fixtures and helpers for the torch-backend service tests.

The server itself is started by harness.py (shared with the fuzzer and the
benchmarks); its names are re-exported here, where the test modules import them
from. Importing harness puts the role's package dir on sys.path with bytecode
writing off, before anything below imports the package in-process, so no
__pycache__ ever appears under roles/.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import pytest

from harness import (  # noqa: F401  (re-exported for the test modules)
    LISTEN_RE, PKG_DIR, REPO, ROLE, ServerProcess, memory_mib, role_filter_plugin, run_service,
    service_env)

# This module as imported by pytest. Test modules here do `from conftest import ...`;
# when one pytest run also collects tests/role (whose conftest is a module named
# `conftest` too, loaded after this one), sys.modules["conftest"] is that one: put
# this one back before each test module of this directory is imported.
_THIS_CONFTEST = sys.modules[__name__]


def pytest_pycollect_makemodule(module_path, parent):
    sys.modules["conftest"] = _THIS_CONFTEST


NNPACK_WARNING = "Could not initialize NNPACK"
# OpenBLAS (numpy's BLAS) picks its kernels from the CPU itself: under qemu-user on an AMD EPYC
# host it took Haswell kernels for -cpu Nehalem, and `import numpy` died of SIGILL inside
# libscipy_openblas (measured 2026-12-08; no real Nehalem, and no full TCG guest, does this). It is
# told its core, which no NNPACK verdict depends on.
QEMU_NEHALEM_ARGS = ["-cpu", "Nehalem", "-E", "OPENBLAS_CORETYPE=Nehalem"]
SELFTEST_INFER = "/v2/models/conv2d-selftest/infer"
# The controller's pure-Python reference for conv2d-selftest (the role's filter plugin): the
# service's numbers are checked against it, as the deploy does.
reference = role_filter_plugin("selftest")
SELFTEST_INPUT = reference.selftest_input(8)                     # the documented input [1, 1, 8, 8]
SELFTEST_EXPECTED = reference.conv2d_reference(SELFTEST_INPUT)   # its 128 outputs, flat
SELFTEST_PAYLOAD = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                "data": SELFTEST_INPUT}]}
# What the shared server is started with, as the deploy writes it into the environment file.
SERVER_CONFIG_DIGEST = "0123456789abcdef"


def assert_selftest_answers(srv, count, timeout=60.0):
    """`count` self-test inferences on one keep-alive connection, each answered 200 with
    the reference's numbers."""
    conn = srv.connect(timeout=timeout)
    try:
        for _ in range(count):
            conn.request("POST", SELFTEST_INFER, json.dumps(SELFTEST_PAYLOAD).encode())
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
            assert json.loads(body)["outputs"][0]["data"] == SELFTEST_EXPECTED
    finally:
        conn.close()


def make_release(base, release_id, complete=True):
    """A release laid out as the role does it: BASE/releases/ID/venv (a real venv, whose
    python sees this controller's packages through a .pth file), BASE/releases/ID/.complete
    when `complete`; returns the release directory. The service package itself still
    comes from PYTHONPATH (service_env)."""
    release = Path(base) / "releases" / release_id
    venv.EnvBuilder(with_pip=False, symlinks=True).create(str(release / "venv"))
    (site_packages,) = (release / "venv" / "lib").glob("python*/site-packages")
    (site_packages / "controller.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    if complete:
        (release / ".complete").write_text(json.dumps({"release": release_id, "runtime": "test"}, indent=4) + "\n")
    return release


def point_current(base, release_id):
    """Switch BASE/current to releases/ID atomically (a relative symlink renamed over it)."""
    tmp = Path(base) / ".current.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(os.path.join("releases", release_id), tmp)
    os.replace(tmp, Path(base) / "current")
    return Path(base) / "current"


# --- models written by the tests ----------------------------------------------

SLOW_SERVER_ENV = {"TORCH_BACKEND_INTRA_OP_THREADS": "1"}


def write_slow_model(directory, name="slow", base_loops=0, sha256=True):
    """A TorchScript model whose run time the caller controls.

    input x FP32 [-1, 1]; output y = 2 * x, after int(x[0, 0]) + base_loops
    rounds of a small matmul: so a request can hold a worker for a chosen time,
    and base_loops makes the warm-up (zeros) slow too.
    """
    import torch

    from torch_backend.models import sha256_file

    class Slow(torch.nn.Module):
        def __init__(self, loops: int):
            super().__init__()
            gen = torch.Generator().manual_seed(0)
            self.register_buffer("w", torch.randn(192, 192, generator=gen) / 14.0)
            self.base_loops = loops

        def forward(self, x):
            n = int(x[0, 0].item()) + self.base_loops
            y = self.w
            for _ in range(n):
                y = torch.tanh(y @ self.w)
            return x * 2.0 + y.sum() * 0.0

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pt = directory / f"{name}.pt"
    torch.jit.save(torch.jit.script(Slow(base_loops)), str(pt))
    meta = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]}
    if sha256:
        meta["sha256"] = sha256_file(str(pt)) if sha256 is True else sha256
    (directory / f"{name}.json").write_text(json.dumps(meta))
    return pt


@pytest.fixture(scope="session")
def slow_loops_per_second(tmp_path_factory):
    """How many slow-model loops this machine runs per second (measured)."""
    import torch

    # One thread, like the servers that run the slow model (SLOW_SERVER_ENV):
    # many tiny multi-threaded matmuls are erratic on a busy machine.
    directory = tmp_path_factory.mktemp("calibrate")
    model = torch.jit.load(str(write_slow_model(directory)))
    x = torch.tensor([[200.0]])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            model(torch.tensor([[5.0]]))
            start = time.perf_counter()
            model(x)
            elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return 200 / max(elapsed, 1e-4)


@pytest.fixture(scope="session")
def resnet_dir(tmp_path_factory):
    """A model dir with the ResNet-18-shaped model, written by the package's CLI."""
    directory = tmp_path_factory.mktemp("resnet")
    proc = subprocess.run([sys.executable, "-m", "torch_backend", "export-resnet18", str(directory)],
                          env=service_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (directory / "resnet18.pt").is_file() and (directory / "resnet18.json").is_file()
    return directory


@pytest.fixture(scope="session")
def notify_socket(tmp_path_factory):
    """An abstract unix datagram socket standing in for systemd's notify socket."""
    name = f"torch-backend-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0.0)
    yield "@" + name, sock
    sock.close()


def drain_datagrams(sock):
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except (BlockingIOError, socket.timeout):
            return messages


@pytest.fixture(scope="session")
def server(tmp_path_factory, resnet_dir, notify_socket):
    """The shared server: built-in self-test + ResNet-18 + a slow model; auto NNPACK;
    TORCH_BACKEND_CONFIG_DIGEST set (SERVER_CONFIG_DIGEST), run from no release."""
    tmp = tmp_path_factory.mktemp("server")
    models = tmp / "models"
    models.mkdir()
    for f in ("resnet18.pt", "resnet18.json"):
        os.symlink(resnet_dir / f, models / f)
    write_slow_model(models)
    srv = ServerProcess(tmp, {"TORCH_BACKEND_MODEL_DIR": str(models),
                              "NOTIFY_SOCKET": notify_socket[0],
                              "TORCH_BACKEND_CONFIG_DIGEST": SERVER_CONFIG_DIGEST}).start()
    try:
        srv.wait_ready()
        yield srv
    finally:
        rc = srv.terminate()
        assert rc == 0, srv.stderr


def pytest_sessionfinish(session, exitstatus):
    # Guard for the rule that nothing may write bytecode into the role.
    stray = list((REPO / "roles").rglob("__pycache__"))
    for path in stray:
        shutil.rmtree(path, ignore_errors=True)
    if stray:
        print(f"\nWARNING: removed stray __pycache__ under roles/: {stray}", file=sys.stderr)
