"""Helpers for the torch-backend service tests.

The package is never pip-installed for the tests (that would write build
artefacts into the role's files directory): servers run as subprocesses with
PYTHONPATH pointing at the package and PYTHONDONTWRITEBYTECODE=1, and the
in-process imports below happen after sys.dont_write_bytecode is set, so no
__pycache__ ever appears under roles/.
"""

import sys

sys.dont_write_bytecode = True

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sysconfig  # noqa: E402
import time  # noqa: E402
import venv  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PKG_DIR = REPO / "roles" / "pytorch_backend" / "files" / "torch-backend"
if str(PKG_DIR) not in sys.path:
    sys.path.insert(0, str(PKG_DIR))

# This module as imported by pytest. Test modules here do `from conftest import ...`;
# when one pytest run also collects tests/role (whose conftest is a module named
# `conftest` too, loaded after this one), sys.modules["conftest"] is that one: put
# this one back before each test module of this directory is imported.
_THIS_CONFTEST = sys.modules[__name__]


def pytest_pycollect_makemodule(module_path, parent):
    sys.modules["conftest"] = _THIS_CONFTEST


LISTEN_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
NNPACK_WARNING = "Could not initialize NNPACK"
SELFTEST_INFER = "/v2/models/conv2d-selftest/infer"
# What the shared server is started with, as the deploy writes it into the environment file.
SERVER_CONFIG_DIGEST = "0123456789abcdef"


def service_env(**overrides):
    """A clean environment: nothing from the caller's TORCH_BACKEND_*/USE_NNPACK/NOTIFY_SOCKET."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("TORCH_BACKEND_") or k in ("USE_NNPACK", "NOTIFY_SOCKET",
                                                           "PYTHONPATH", "TORCH_CPP_LOG_LEVEL"))}
    env.update({
        "PYTHONPATH": str(PKG_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
        "TORCH_BACKEND_HOST": "127.0.0.1",
        "TORCH_BACKEND_PORT": "0",   # the server picks a free port and logs it
        "TORCH_BACKEND_MODEL_DIR": "/nonexistent/torch-backend-models",
    })
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class ServerProcess:
    """A real `python -m torch_backend serve` subprocess on 127.0.0.1."""

    def __init__(self, tmp_dir, env=None, wrapper=(), name="server", python=None):
        self.tmp_dir = Path(tmp_dir)
        self.python = str(python or sys.executable)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.tmp_dir / f"{name}.stderr"
        self.env = service_env(**(env or {}))
        self.wrapper = list(wrapper)
        self.proc = None
        self.port = None

    def start(self):
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            self.wrapper + [self.python, "-m", "torch_backend", "serve"],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._stderr, cwd=self.tmp_dir)
        return self

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_listening(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = LISTEN_RE.search(self.stderr)
            if match:
                self.port = int(match.group(1))
                return self.port
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.stderr}")
            time.sleep(0.05)
        raise AssertionError(f"server did not listen within {timeout} s:\n{self.stderr}")

    def wait_ready(self, timeout=120.0):
        if self.port is None:
            self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.stderr}")
            try:
                if self.request("GET", "/v2/health/ready")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout} s:\n{self.stderr}")

    def connect(self, timeout=60.0):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60.0):
        """One request on a fresh connection: (status, headers dict, body bytes)."""
        conn = self.connect(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get_json(self, path):
        status, _, body = self.request("GET", path)
        return status, json.loads(body)

    def infer(self, model, payload, headers=None):
        body = payload if isinstance(payload, (bytes, bytearray)) else json.dumps(payload).encode()
        status, hdrs, data = self.request("POST", f"/v2/models/{model}/infer", body, headers)
        return status, hdrs, data

    def metrics(self) -> str:
        return self.request("GET", "/metrics")[2].decode()

    def metric(self, name) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"metric {name} not found")

    def terminate(self, timeout=30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_service(env, tmp_dir, timeout=120):
    """Run `serve` expecting it to exit by itself (config/model errors)."""
    proc = subprocess.run([sys.executable, "-m", "torch_backend", "serve"],
                          env=service_env(**env), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_dir)
    return proc.returncode, proc.stderr


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
