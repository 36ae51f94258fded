"""The real torch-backend service as a subprocess: start it, wait until it is ready, stop it.
Also the role's controller-side reference for its self-test model (role_filter_plugin).

One harness for everything that runs the service from this checkout: the service
tests (conftest.py's fixtures), the fuzzer (tests/service/fuzz/) and the benchmarks
(bench/bench-service, bench/bench-memory). It lives beside the tests, not in bench/,
because the tests are what must always run (CI); the benchmarks put this directory
on sys.path to import it, as the fuzzer's command line does.

The package is never pip-installed here (that would write build artefacts into the
role's files directory): the server runs as `python -m torch_backend serve` with
PYTHONPATH pointing at the package and PYTHONDONTWRITEBYTECODE=1. Importing this
module also puts the package first on sys.path and turns bytecode writing off, for
importers that use the package in-process, so that no __pycache__ appears under roles/.
Standard library only.
"""

import sys

sys.dont_write_bytecode = True

import http.client  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "pytorch_backend"
PKG_DIR = ROLE / "files" / "torch-backend"
if str(PKG_DIR) not in sys.path:
    sys.path.insert(0, str(PKG_DIR))

# The service logs its URL with IPv6 literals in brackets (http://[::1]:PORT).
LISTEN_RE = re.compile(r"listening on http://(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d+)")

from torch_backend import listen_address  # noqa: E402  (standard library only, no torch)


def role_filter_plugin(name):
    """roles/pytorch_backend/filter_plugins/NAME.py as a module, loaded by path as Ansible
    loads it. role_filter_plugin("selftest") is the one pure-Python reference for the
    conv2d-selftest model (selftest_input, conv2d_reference): what the deploy verifies
    the service with, and so what the tests, the fuzzer and the benchmarks use too."""
    spec = importlib.util.spec_from_file_location(f"pytorch_backend_filter_{name}",
                                                  ROLE / "filter_plugins" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def service_env(**overrides):
    """A clean environment: nothing from the caller's TORCH_BACKEND_*/USE_NNPACK/NOTIFY_SOCKET.

    Overrides set variables; an override of None removes one."""
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


def memory_mib(pid):
    """(VmHWM, VmRSS) of a process in MiB, from /proc/PID/status: peak and current
    resident memory. (None, None) if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None, None
    values = dict(re.findall(r"^(VmHWM|VmRSS):\s+(\d+) kB", text, re.M))
    return int(values["VmHWM"]) / 1024, int(values["VmRSS"]) / 1024


# What systemd does for a socket-activated service, as a program run before it: the
# listening socket (argv[1], a descriptor) becomes fd 3, LISTEN_FDS=1 and LISTEN_PID =
# this process, which then becomes the service (exec keeps the pid).
SOCKET_ACTIVATION = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n")


def activation_socket(host="127.0.0.1", port=0, backlog=128):
    """A listening TCP socket made as systemd makes one (protocol 0, not IPPROTO_TCP),
    to hand to ServerProcess(listen_socket=...)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


class ServerProcess:
    """A real `python -m torch_backend serve` subprocess on 127.0.0.1 (or the
    TORCH_BACKEND_HOST given in `env`: requests go where a local client reaches it).

    Its stderr goes to TMP_DIR/NAME.stderr; it runs in TMP_DIR. Failures to start
    raise AssertionError with the server's stderr. With `listen_socket`, the server
    gets that socket as systemd's socket activation passes one (fd 3, LISTEN_FDS,
    LISTEN_PID); several servers may be given the same socket."""

    def __init__(self, tmp_dir, env=None, wrapper=(), name="server", python=None,
                 listen_socket=None):
        self.tmp_dir = Path(tmp_dir)
        self.python = str(python or sys.executable)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = self.tmp_dir / f"{name}.stderr"
        self.env = service_env(**(env or {}))
        self.wrapper = list(wrapper)
        self.listen_socket = listen_socket
        self.proc = None
        self.port = None
        self.host = listen_address.local_host(self.env["TORCH_BACKEND_HOST"])
        if listen_socket is not None:
            self.host, self.port = listen_socket.getsockname()[:2]

    def start(self):
        self._stderr = open(self.stderr_path, "wb")
        command = self.wrapper + [self.python, "-m", "torch_backend", "serve"]
        pass_fds = ()
        if self.listen_socket is not None:
            fd = self.listen_socket.fileno()
            command = [self.python, "-c", SOCKET_ACTIVATION, str(fd)] + command
            pass_fds = (fd,)
        self.proc = subprocess.Popen(
            command, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._stderr, cwd=self.tmp_dir, pass_fds=pass_fds)
        return self

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_listening(self, timeout=60.0):
        if self.listen_socket is not None:
            return self.port   # listening already: the socket is ours
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
        """Until GET /v2/health/ready answers 200 (models loaded and warmed up)."""
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

    def memory_mib(self):
        """(VmHWM, VmRSS) of the server in MiB; (None, None) once it is gone."""
        return memory_mib(self.proc.pid)

    def connect(self, timeout=60.0):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

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
        """SIGTERM, then SIGKILL after `timeout` s; the exit status."""
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
    """Run `serve` expecting it to exit by itself (config/model errors): (status, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "torch_backend", "serve"],
                          env=service_env(**env), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_dir)
    return proc.returncode, proc.stderr
