"""Access log, request ids and what each log level logs (the README's table)."""

import json
import re

import pytest

from conftest import SELFTEST_INFER, SELFTEST_PAYLOAD, ServerProcess

pytestmark = pytest.mark.slow

ACCESS_RE = re.compile(r"^(DEBUG|INFO) torch_backend\.access: (\S+) (\S+) (\d{3}) "
                       r"(\d+\.\d)ms (\d+)B id=(\S+)(?: traceparent=(\S+))?$", re.M)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def three_requests(srv):
    out = [srv.request("GET", "/v2/health/live", headers={"X-Request-Id": "abc-123"}),
           srv.request("GET", "/nope", headers={"traceparent": TRACEPARENT}),
           srv.infer("conv2d-selftest", SELFTEST_PAYLOAD)]
    return out


# level, TORCH_BACKEND_ACCESS_LOG -> the level access lines appear at (None: no lines)
@pytest.mark.parametrize("level, access, expected", [
    ("DEBUG", "0", "DEBUG"),
    ("DEBUG", "1", "INFO"),
    ("INFO", "0", None),
    ("INFO", "1", "INFO"),
    ("WARNING", "1", None),
])
def test_access_lines_per_level(tmp_path, level, access, expected):
    # At WARNING the "listening on" line is not logged: the port is chosen here.
    port = free_port()
    srv = ServerProcess(tmp_path, {"TORCH_BACKEND_LOG_LEVEL": level, "TORCH_BACKEND_PORT": str(port),
                                   "TORCH_BACKEND_ACCESS_LOG": access}).start()
    srv.port = port
    try:
        srv.wait_ready()
        answers = three_requests(srv)
        assert srv.terminate() == 0
        lines = ACCESS_RE.findall(srv.stderr)
        # the readiness polls of the harness are requests too: only ours are counted
        ours = [m for m in lines if m[2] in ("/v2/health/live", "/nope", SELFTEST_INFER)]
        if expected is None:
            assert ours == [], srv.stderr
            return
        assert [m[0] for m in ours] == [expected] * 3, srv.stderr
        (live, nope, infer) = ours
        assert live[1:4] == ("GET", "/v2/health/live", "200") and live[6] == "abc-123"
        assert nope[1:4] == ("GET", "/nope", "404") and nope[7] == TRACEPARENT
        assert infer[1:4] == ("POST", SELFTEST_INFER, "200")
        assert int(infer[5]) == len(answers[2][2])
        # the id each answer carried is the one logged
        assert [a[1]["x-request-id"] for a in answers] == [m[6] for m in ours]
        if level == "INFO":   # INFO logs no DEBUG lines
            assert not re.search(r"^DEBUG ", srv.stderr, re.M)
    finally:
        srv.kill()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("given, kept", [
    ("abc-123", True),
    ("A" * 128, True),
    ("A" * 129, False),          # too long
    ("has space", False),        # two log tokens
    ("caf\u00e9", False),        # not ASCII
    ("", False),
])
def test_request_id_taken_when_valid_else_made(server, given, kept):
    headers = {"X-Request-Id": given.encode("utf-8").decode("latin-1")}
    status, resp_headers, _ = server.request("GET", "/v2/health/live", headers=headers)
    assert status == 200
    rid = resp_headers["x-request-id"]
    if kept:
        assert rid == given
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", rid), rid


def test_request_id_on_errors_and_503s(server):
    status, headers, body = server.request("POST", "/v2/models/nosuch/infer", b"{}")
    assert status == 404 and re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    assert "error" in json.loads(body)
