"""IPv6 listen addresses: the real service bound to ::1 and to :: (all addresses),
called over IPv6 (and, for ::, over IPv4 too); bad addresses refused at start-up.

Needs IPv6 on the loopback interface (`ip -6 addr show lo` lists ::1); skipped where
it is missing, since nothing can then be bound to ::1."""

import http.client
import json
import socket
import urllib.request

import pytest

from conftest import SELFTEST_EXPECTED, SELFTEST_PAYLOAD, ServerProcess, run_service
from torch_backend import config, listen_address


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) here")


def get_json(host, port, path):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.fixture(scope="module", params=["::1", "::"])
def ipv6_server(request, tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("ipv6"), env={"USE_NNPACK": "0",
                                                              "TORCH_BACKEND_HOST": request.param})
    srv.start()
    try:
        srv.wait_ready()
        yield request.param, srv
    finally:
        srv.terminate()


def test_serves_inference_over_ipv6(ipv6_server):
    host, srv = ipv6_server
    assert srv.host == "::1"     # a local client reaches both binds on the IPv6 loopback
    assert f"listening on {listen_address.url(host, srv.port)}" in srv.stderr
    status, _, body = srv.infer("conv2d-selftest", SELFTEST_PAYLOAD)
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == SELFTEST_EXPECTED
    assert get_json("::1", srv.port, "/v2")[1]["name"] == "torch-backend"


def test_ipv4_reaches_only_the_all_addresses_bind(ipv6_server):
    host, srv = ipv6_server
    if host == "::":
        # dual stack set on the socket, whatever net.ipv6.bindv6only says
        assert get_json("127.0.0.1", srv.port, "/v2/health/ready")[0] == 200
    else:
        with pytest.raises(ConnectionRefusedError):
            get_json("127.0.0.1", srv.port, "/v2/health/ready")


def test_urls_the_role_builds_reach_it(ipv6_server):
    """The role's verifier URL for this bind, called with urllib as the host-state read does."""
    host, srv = ipv6_server
    url = listen_address.local_url(host, srv.port)
    assert url == f"http://[::1]:{srv.port}"
    with urllib.request.urlopen(url + "/v2/health/ready", timeout=30) as resp:
        assert resp.status == 200


BAD_HOSTS = ["[::1]", "1::2::3", "::1%lo", "2001:db8::g", "12345::", "256.1.1.1", "1.2.3", "host name", "-host"]


@pytest.mark.parametrize("value", BAD_HOSTS)
def test_bad_host_is_a_configuration_error(value):
    with pytest.raises(config.ConfigError) as info:
        config.load({"TORCH_BACKEND_HOST": value}, cores=1)
    assert info.value.variable == "TORCH_BACKEND_HOST" and repr(value) in str(info.value)


@pytest.mark.parametrize("value", ["::1", "::", "0:0:0:0:0:0:0:1", "2001:db8::5", "::ffff:127.0.0.1",
                                   "127.0.0.1", "0.0.0.0", "localhost", "api.internal.example"])
def test_good_host_is_taken_as_written(value):
    assert config.load({"TORCH_BACKEND_HOST": value}, cores=1).host == value


def test_service_refuses_a_bracketed_ipv6_host_with_one_clear_line(tmp_path):
    rc, stderr = run_service({"TORCH_BACKEND_HOST": "[::1]"}, tmp_path, timeout=60)
    assert rc == 2, stderr
    (line,) = stderr.strip().splitlines()
    assert "configuration error" in line and "TORCH_BACKEND_HOST='[::1]'" in line
    assert "without them" in line
