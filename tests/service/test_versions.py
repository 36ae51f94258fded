"""Versioned routes (/v2/models/{name}/versions/{version}[/ready|/infer]) for every version
a model's metadata lists, answering as the plain routes do (issue 13: tritonclient calls
with model_version="1" got 404 while the metadata advertised versions ["1"])."""

import json

import pytest
from conftest import SELFTEST_EXPECTED, SELFTEST_INFER, SELFTEST_PAYLOAD, ServerProcess

BASE = "/v2/models/conv2d-selftest"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("versions")).start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.terminate()


def test_every_listed_version_answers_as_the_plain_routes(srv):
    status, meta = srv.get_json(BASE)
    assert status == 200 and meta["versions"]
    for version in meta["versions"]:
        vbase = f"{BASE}/versions/{version}"
        assert srv.get_json(vbase) == (200, meta)
        assert srv.get_json(f"{vbase}/ready") == srv.get_json(f"{BASE}/ready")
        status, _, body = srv.infer(f"conv2d-selftest/versions/{version}", SELFTEST_PAYLOAD)
        assert status == 200, body
        answer = json.loads(body)
        assert answer["model_version"] == version
        assert answer["outputs"][0]["data"] == SELFTEST_EXPECTED
    assert srv.metric('torch_backend_requests_total{code="200",model="conv2d-selftest"}') >= 3


@pytest.mark.parametrize("path", [f"{BASE}/versions/2", f"{BASE}/versions/2/ready",
                                  f"{BASE}/versions/x/infer"])
def test_an_unlisted_version_is_404_naming_the_versions(srv, path):
    method = "POST" if path.endswith("/infer") else "GET"
    body = json.dumps(SELFTEST_PAYLOAD).encode() if method == "POST" else None
    status, _, data = srv.request(method, path, body)
    assert status == 404 and "versions: ['1']" in json.loads(data)["error"]


def test_plain_infer_still_names_the_version(srv):
    status, _, body = srv.request("POST", SELFTEST_INFER, json.dumps(SELFTEST_PAYLOAD).encode())
    assert status == 200 and json.loads(body)["model_version"] == "1"
