"""torch_backend_verify against a real torch-backend process on 127.0.0.1.

The journal check needs systemd, which this controller does not run as PID 1:
these tests pass unit='' and the journal part is exercised by the Molecule scenarios.

The server runs as the role runs it: BASE/current/venv/bin/python, `current` pointing
at BASE/releases/RELEASE (a real venv seeing this controller's packages), with
TORCH_BACKEND_CONFIG_DIGEST in its environment; so it reports RELEASE and DIGEST.
"""
import http.server
import importlib.util
import json
import os
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import venv

from pathlib import Path

import pytest

# Not `from conftest import ROLE`: a run that also collects tests/service has its conftest there.
ROLE = Path(__file__).resolve().parents[2] / "roles" / "pytorch_backend"
MODULE = ROLE / "library" / "torch_backend_verify.py"
PACKAGE = ROLE / "files" / "torch-backend"

sys.path.insert(0, str(ROLE / "filter_plugins"))
import selftest  # noqa: E402

_spec = importlib.util.spec_from_file_location("pytorch_backend_filter_listen_address",
                                               ROLE / "filter_plugins" / "listen_address.py")
listen_address = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(listen_address)


RELEASE = "3f9c0a1b2d4e"
DIGEST = "9a8b7c6d5e4f3a2b"
RELEASE_MISMATCH = ("torch-backend serves release {old}, but current points to {new} "
                    "(it was not restarted after the switch)")
DIGEST_MISMATCH = ("torch-backend started with configuration digest {old}, but the files on disk "
                   "say {new} (it was not restarted after they changed)")


def make_release(base, release_id):
    """BASE/releases/ID/{venv,.complete} as the role lays them out, and BASE/current -> it."""
    release = base / "releases" / release_id
    venv.EnvBuilder(with_pip=False, symlinks=True).create(str(release / "venv"))
    (site_packages,) = (release / "venv" / "lib").glob("python*/site-packages")
    (site_packages / "controller.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (release / ".complete").write_text(json.dumps({"release": release_id, "runtime": "test"}) + "\n")
    os.symlink(os.path.join("releases", release_id), base / "current")
    return base / "current" / "venv" / "bin" / "python"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    python = make_release(tmp_path_factory.mktemp("base"), RELEASE)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(PACKAGE), PYTHONDONTWRITEBYTECODE="1", TORCH_BACKEND_PORT=str(port),
               TORCH_BACKEND_MODEL_DIR="/nonexistent", USE_NNPACK="0", TORCH_BACKEND_CONFIG_DIGEST=DIGEST)
    proc = subprocess.Popen([str(python), "-m", "torch_backend", "serve"], env=env,
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


def verify(tmp_path, url, **args):
    x = selftest.selftest_input(8)
    return run_module(tmp_path, url=url, input=x, expected=selftest.conv2d_reference(x), unit="",
                      requests=1, ready_timeout=240, **args)


def test_verified_when_release_and_config_digest_match(service, tmp_path):
    result = verify(tmp_path, service, expect_release=RELEASE, expect_config_digest=DIGEST)
    assert result["verified"] is True and result["problems"] == [], result
    assert (result["served_release"], result["served_config_digest"]) == (RELEASE, DIGEST)
    assert result["server"]["release"] == RELEASE and result["server"]["config_digest"] == DIGEST


def test_served_release_and_digest_returned_without_expectations(service, tmp_path):
    result = verify(tmp_path, service)
    assert result["verified"] is True, result
    assert (result["served_release"], result["served_config_digest"]) == (RELEASE, DIGEST)


def test_not_verified_when_release_differs(service, tmp_path):
    result = verify(tmp_path, service, expect_release="a1b2c3d4e5f6", expect_config_digest=DIGEST)
    assert result["verified"] is False
    assert result["problems"] == [RELEASE_MISMATCH.format(old=RELEASE, new="a1b2c3d4e5f6")], result
    # Everything else still checked and fine.
    assert result["max_abs_error"] == 0 and result["served_release"] == RELEASE


def test_not_verified_when_config_digest_differs(service, tmp_path):
    result = verify(tmp_path, service, expect_release=RELEASE, expect_config_digest="00000000ffffffff")
    assert result["verified"] is False
    assert result["problems"] == [DIGEST_MISMATCH.format(old=DIGEST, new="00000000ffffffff")], result


def test_both_mismatches_are_reported(service, tmp_path):
    result = verify(tmp_path, service, expect_release="a1b2c3d4e5f6", expect_config_digest="00000000ffffffff")
    assert result["verified"] is False
    assert result["problems"] == [RELEASE_MISMATCH.format(old=RELEASE, new="a1b2c3d4e5f6"),
                                  DIGEST_MISMATCH.format(old=DIGEST, new="00000000ffffffff")], result


@pytest.fixture
def old_server():
    """Stands in for a release from before the service reported itself: ready, and a
    GET /v2 without "release" and "config_digest" (inference is not answered)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/v2/health/ready": {"ready": True},
                    "/v2": {"name": "torch-backend", "version": "0.1.0", "extensions": []}}.get(self.path)
            data = json.dumps(body).encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_server_reporting_no_release_is_none(old_server, tmp_path):
    result = verify(tmp_path, old_server, expect_release=RELEASE, expect_config_digest=DIGEST)
    assert result["verified"] is False
    assert result["served_release"] is None and result["served_config_digest"] is None
    assert RELEASE_MISMATCH.format(old="none", new=RELEASE) in result["problems"]
    assert DIGEST_MISMATCH.format(old="none", new=DIGEST) in result["problems"]


def test_verified_over_ipv6_at_the_url_the_role_builds(ipv6_service, tmp_path):
    """A real service bound to ::1 (tests/role/conftest.py), verified at the role's URL for it."""
    url = listen_address.local_url("::1", ipv6_service)
    assert url == f"http://[::1]:{ipv6_service}"
    result = verify(tmp_path, url)
    assert result["verified"] is True and result["problems"] == [], result
    assert result["max_abs_error"] == 0 and result["server"]["name"] == "torch-backend"


@pytest.mark.parametrize("url", ["http://::1:{port}", "http://::1", "::1:{port}", "http://[::1:{port}",
                                 "ftp://127.0.0.1:{port}", "http://127.0.0.1:port"])
def test_a_url_that_is_not_one_fails_at_once_saying_so(ipv6_service, tmp_path, url):
    """Without brackets an IPv6 address cannot be told from its port (RFC 3986): such a URL is
    refused, not reached by accident (http.client splits at the last colon) or waited on."""
    start = time.monotonic()
    result = verify(tmp_path, url.format(port=ipv6_service))
    assert result.get("failed") is True, result
    assert result["msg"].startswith("url must be an http(s) URL") and "[::1]" in result["msg"], result
    assert time.monotonic() - start < 30
