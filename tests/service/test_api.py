"""The HTTP API against one real server: endpoints, bad input, limits."""

import json
import os
import re
import socket
import struct
import sys
import time

import pytest

from conftest import (NNPACK_WARNING, SELFTEST_INFER, SELFTEST_INPUT, SELFTEST_PAYLOAD,
                      SERVER_CONFIG_DIGEST, drain_datagrams)
from torch_backend import release

GOOD = SELFTEST_PAYLOAD
FLAT = [v for row in SELFTEST_INPUT[0][0] for v in row]


def good_with(**changes):
    item = dict(GOOD["inputs"][0], **changes)
    return {"inputs": [item]}


def binary_request(header_obj, blob, header_len=None):
    header = json.dumps(header_obj).encode()
    length = len(header) if header_len is None else header_len
    return header + blob, {"Inference-Header-Content-Length": str(length)}


def raw_exchange(port, data: bytes, timeout=10.0) -> bytes:
    """Send raw bytes, read until the server closes or the timeout: for what
    http.client will not send (no Content-Length, lying lengths)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            pass
        return b"".join(chunks)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


# --- health, metadata, metrics --------------------------------------------------

def test_health(server):
    assert server.get_json("/v2/health/live") == (200, {"live": True})
    assert server.get_json("/v2/health/ready") == (200, {"ready": True})


def test_server_metadata(server):
    status, meta = server.get_json("/v2")
    assert status == 200
    assert meta["name"] == "torch-backend" and meta["version"] == "0.1.0"
    assert "binary_tensor_data" in meta["extensions"]
    nn = meta["nnpack"]
    assert set(nn) >= {"enabled", "decided_by", "cpu_capability"}
    assert nn["decided_by"] == "auto" and isinstance(nn["enabled"], bool)


def test_server_metadata_reports_release_and_config_digest(server):
    status, meta = server.get_json("/v2")
    assert status == 200
    # Started with the environment file's digest, from the controller's venv: no release
    # (unless this checkout itself sits in a releases/ directory).
    assert meta["config_digest"] == SERVER_CONFIG_DIGEST
    assert "release" in meta and meta["release"] == release.resolve(sys.prefix)
    # The fields that were there before are all still there.
    assert set(meta) >= {"name", "version", "extensions", "nnpack", "cpu_drift"}


def test_build_info_metric(server):
    text = server.metrics()
    assert re.search(r"^# TYPE torch_backend_build_info gauge$", text, re.M)
    lines = [ln for ln in text.splitlines() if ln.startswith("torch_backend_build_info")]
    served = release.resolve(sys.prefix) or ""
    # prometheus_client lists labels alphabetically and values as floats.
    assert lines == [f'torch_backend_build_info{{config_digest="{SERVER_CONFIG_DIGEST}",'
                     f'release="{served}",version="0.1.0"}} 1.0'], lines


def test_model_metadata_and_ready(server):
    status, meta = server.get_json("/v2/models/conv2d-selftest")
    assert status == 200
    assert meta["name"] == "conv2d-selftest" and meta["platform"] == "pytorch_torchscript"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 2, 8, 8]}]
    assert server.get_json("/v2/models/conv2d-selftest/ready")[0] == 200
    assert server.get_json("/v2/models/resnet18")[1]["inputs"][0]["shape"] == [-1, 3, 224, 224]
    assert server.get_json("/v2/models/nope/ready")[0] == 404


def test_metrics(server):
    server.infer("conv2d-selftest", GOOD)
    server.infer("conv2d-selftest", {"inputs": []})
    text = server.metrics()
    assert re.search(r'^torch_backend_requests_total\{code="200",model="conv2d-selftest"\} \d+\.0$',
                     text, re.M)
    assert re.search(r'^torch_backend_requests_total\{code="400",model="conv2d-selftest"\} \d+\.0$',
                     text, re.M)
    assert re.search(r'^torch_backend_errors_total\{kind="bad_request"\} \d+\.0$', text, re.M)
    assert 'torch_backend_request_duration_seconds_bucket{le="+Inf",model="conv2d-selftest"}' in text
    assert 'torch_backend_request_duration_seconds_count{model="conv2d-selftest"}' in text
    assert re.search(r"^# TYPE torch_backend_request_duration_seconds histogram$", text, re.M)
    assert server.metric("torch_backend_queue_depth") == 0
    nnpack_enabled = server.get_json("/v2")[1]["nnpack"]["enabled"]
    assert server.metric("torch_backend_nnpack_enabled") == (1 if nnpack_enabled else 0)
    assert server.metric("torch_backend_ready") == 1


def test_sd_notify_ready_was_sent(server, notify_socket):
    messages = drain_datagrams(notify_socket[1])
    assert any("READY=1" in m.split("\n") for m in messages), messages


def test_startup_line_and_clean_stderr(server):
    text = server.stderr
    (line,) = [ln for ln in text.splitlines() if "starting torch-backend" in ln]
    for part in ("nnpack=", "(auto:", "torch=2.", "cpu_capability=", "onednn=",
                 "intra_op_threads=", "inter_op_threads=", "workers=",
                 f"release={release.resolve(sys.prefix) or 'none'} ",
                 f"config_digest={SERVER_CONFIG_DIGEST} "):
        assert part in line
    # Only our own one-line log records: no Python/C++ warnings, no tracebacks.
    for ln in text.splitlines():
        assert re.match(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) torch_backend", ln), ln
    assert NNPACK_WARNING not in text


# --- the ResNet-18-shaped model from the model dir ---------------------------------

def test_resnet_from_model_dir_json_and_binary(server, resnet_dir):
    import numpy as np
    import torch

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    model = torch.jit.load(str(resnet_dir / "resnet18.pt"))
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()

    payload = {"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                           "data": x.ravel().tolist()}]}
    status, _, body = server.infer("resnet18", payload)
    assert status == 200, body[:200]
    out = json.loads(body)["outputs"][0]
    assert out["name"] == "logits" and out["shape"] == [1, 1000]
    np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(1, 1000),
                               expected, rtol=1e-4, atol=1e-4)

    body, headers = binary_request(
        {"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                     "parameters": {"binary_data_size": x.nbytes}}],
         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}, x.tobytes())
    status, rh, data = server.request("POST", "/v2/models/resnet18/infer", body, headers)
    assert status == 200
    n = int(rh["inference-header-content-length"])
    got = np.frombuffer(data[n:], dtype="<f4").reshape(1, 1000)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_keep_alive_many_requests_one_connection(server):
    conn = server.connect()
    try:
        for _ in range(20):
            conn.request("POST", SELFTEST_INFER, json.dumps(GOOD).encode())
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Connection") != "close"
            resp.read()
        # An error that needs no close keeps the connection too.
        conn.request("POST", SELFTEST_INFER, b"{}")
        resp = conn.getresponse()
        assert resp.status == 400
        resp.read()
        conn.request("GET", "/v2/health/live")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


# --- bad input: always a 4xx with a clear JSON error ----------------------------

BAD_JSON_CASES = {
    "malformed JSON": (b'{"inputs": [', 400, "not valid JSON"),
    "not an object": (b"[1, 2]", 400, "JSON object"),
    "no inputs": (b"{}", 400, "inputs"),
    "empty inputs": (json.dumps({"inputs": []}).encode(), 400, "inputs"),
    "wrong datatype": (json.dumps(good_with(datatype="FP64")).encode(), 400, "datatype"),
    "unknown datatype": (json.dumps(good_with(datatype="BYTES")).encode(), 400, "datatype"),
    "shape/data mismatch": (json.dumps(good_with(shape=[2, 1, 8, 8])).encode(), 400, "needs 128"),
    "short data": (json.dumps(good_with(data=FLAT[:-1])).encode(), 400, "needs 64"),
    "wrong fixed dim": (json.dumps(good_with(shape=[1, 1, 8, 7], data=FLAT[:56])).encode(),
                        400, "does not match"),
    "wrong rank": (json.dumps(good_with(shape=[64], data=FLAT)).encode(), 400, "dimensions"),
    "zero dim": (json.dumps(good_with(shape=[0, 1, 8, 8], data=[])).encode(), 400, ">= 1"),
    "negative dim": (json.dumps(good_with(shape=[-1, 1, 8, 8])).encode(), 400, ">= 1"),
    "bool in shape": (json.dumps(good_with(shape=[True, 1, 8, 8])).encode(), 400, "integers"),
    "NaN literal": (json.dumps(good_with(data=[float("nan")] + FLAT[1:])).encode(), 400, "NaN"),
    "Infinity literal": (json.dumps(good_with(data=[float("inf")] + FLAT[1:])).encode(),
                         400, "Infinity"),
    "overflows FP32": (json.dumps(good_with(data=[1e39] + FLAT[1:])).encode(), 400, "finite"),
    "strings in data": (json.dumps(good_with(data=["1"] * 64)).encode(), 400, "only numbers"),
    "bools in data": (json.dumps(good_with(data=[True] * 64)).encode(), 400, "only numbers"),
    "nulls in data": (json.dumps(good_with(data=[None] * 64)).encode(), 400, "data"),
    "ragged nesting": (json.dumps(good_with(data=[[1.0, 2.0], [3.0]])).encode(), 400, "data"),
    "nested wrong way": (json.dumps(good_with(data=[FLAT[:32], FLAT[32:]])).encode(), 400, "nested"),
    "data not a list": (json.dumps(good_with(data=5)).encode(), 400, "list"),
    "no data": (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8],
                                        "datatype": "FP32"}]}).encode(), 400, "neither data"),
    "wrong input name": (json.dumps(good_with(name="image")).encode(), 400, "no input 'image'"),
    "input given twice": (json.dumps({"inputs": GOOD["inputs"] * 2}).encode(), 400, "twice"),
    "unknown output": (json.dumps(dict(GOOD, outputs=[{"name": "nope"}])).encode(), 400, "no output"),
    "id not a string": (json.dumps(dict(GOOD, id=5)).encode(), 400, "id"),
    "binary size without header": (json.dumps(good_with(
        parameters={"binary_data_size": 256})).encode(), 400, "Inference-Header-Content-Length"),
    "deep nesting": (b"[" * 100000 + b"]" * 100000, 400, "JSON"),
    "not UTF-8": (b'{"inputs": "\xff\xfe"}', 400, "JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON_CASES))
def test_bad_json_input(server, case):
    body, status, fragment = BAD_JSON_CASES[case]
    got, headers, data = server.request("POST", SELFTEST_INFER, body)
    assert got == status, data
    assert headers["content-type"] == "application/json"
    message = json.loads(data)["error"]
    assert fragment in message, message


def test_wrong_input_count(server, tmp_path):
    # The slow model has one input; two different names -> the second is unknown.
    payload = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0]},
                          {"name": "z", "shape": [1, 1], "datatype": "FP32", "data": [0]}]}
    status, _, data = server.infer("slow", payload)
    assert status == 400 and "no input 'z'" in json.loads(data)["error"]


def test_empty_body(server):
    status, _, data = server.request("POST", SELFTEST_INFER, b"")
    assert status == 400 and "empty" in json.loads(data)["error"]


BLOB = struct.pack("<64f", *FLAT)
BIN_HEADER = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                          "parameters": {"binary_data_size": 256}}]}


@pytest.mark.parametrize("case,body_headers,fragment", [
    ("header longer than body", binary_request(BIN_HEADER, BLOB, header_len=10_000), "outside"),
    ("header length zero", binary_request(BIN_HEADER, BLOB, header_len=0), "outside"),
    ("header length not a number", (b"{}", {"Inference-Header-Content-Length": "ten"}), "decimal"),
    ("header length cuts the JSON", binary_request(BIN_HEADER, BLOB, header_len=20), "JSON"),
    ("blob shorter than claimed", binary_request(BIN_HEADER, BLOB[:200]), "only 200 bytes"),
    ("blob longer than claimed", binary_request(BIN_HEADER, BLOB + b"\0" * 8), "not claimed"),
    ("size disagrees with shape", binary_request(
        {"inputs": [dict(BIN_HEADER["inputs"][0], parameters={"binary_data_size": 252})]},
        BLOB[:252]), "needs 256"),
    ("negative size", binary_request(
        {"inputs": [dict(BIN_HEADER["inputs"][0], parameters={"binary_data_size": -4})]}, b""),
     "binary_data_size"),
    ("NaN in binary", binary_request(BIN_HEADER, struct.pack("<64f", float("nan"), *FLAT[1:])),
     "finite"),
    ("data and binary", binary_request(
        {"inputs": [dict(BIN_HEADER["inputs"][0], data=FLAT)]}, BLOB), "both"),
])
def test_bad_binary_input(server, case, body_headers, fragment):
    body, headers = body_headers
    status, _, data = server.request("POST", SELFTEST_INFER, body, headers)
    assert status == 400, (case, data)
    assert fragment in json.loads(data)["error"], (case, data)


def test_non_finite_output_is_refused_in_json_but_sent_in_binary(server):
    # Finite input whose convolution overflows FP32: JSON cannot carry Inf.
    big = [3e38] * 64
    status, _, data = server.infer("conv2d-selftest", good_with(data=big))
    assert status == 400 and "NaN or Inf" in json.loads(data)["error"]
    status, _, _ = server.infer("conv2d-selftest", dict(good_with(data=big),
                                                       parameters={"binary_data_output": True}))
    assert status == 200


# --- routing ----------------------------------------------------------------------

@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nope", 404),
    ("GET", "/v2/models/nope", 404),
    ("POST", "/v2/models/nope/infer", 404),
    ("GET", SELFTEST_INFER, 405),
    ("POST", "/v2/health/live", 405),
    ("DELETE", "/v2/models/conv2d-selftest", 405),
])
def test_routing_errors(server, method, path, status):
    got, headers, data = server.request(method, path, b"{}" if method == "POST" else None)
    assert got == status
    assert "error" in json.loads(data)
    if status == 405:
        assert headers.get("allow")


def test_unknown_model_error_lists_models(server):
    status, _, data = server.infer("nope", GOOD)
    assert status == 404 and "conv2d-selftest" in json.loads(data)["error"]


# --- body size and length handling -----------------------------------------------

def test_too_large_is_refused_without_reading_the_body(server):
    claimed = 16 * 1024 * 1024 + 1
    start = time.monotonic()
    raw = raw_exchange(server.port, (
        f"POST {SELFTEST_INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {claimed}\r\n\r\n"
    ).encode() + b"{" * 1000)
    assert time.monotonic() - start < 5
    assert status_of(raw) == 413
    assert b"Connection: close" in raw and b"exceeds the limit" in raw


def test_too_large_with_expect_100_continue(server):
    raw = raw_exchange(server.port, (
        f"POST {SELFTEST_INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n"
        "Expect: 100-continue\r\n\r\n").encode())
    assert status_of(raw) == 413 and b"100 Continue" not in raw


def test_missing_content_length(server):
    raw = raw_exchange(server.port, f"POST {SELFTEST_INFER} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status_of(raw) == 411


def test_chunked_is_refused(server):
    raw = raw_exchange(server.port, (
        f"POST {SELFTEST_INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "2\r\n{}\r\n0\r\n\r\n").encode())
    assert status_of(raw) == 411


def test_invalid_content_length(server):
    raw = raw_exchange(server.port, (
        f"POST {SELFTEST_INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n").encode())
    assert status_of(raw) == 400


def test_garbage_request_line(server):
    raw = raw_exchange(server.port, b"\x16\x03\x01 hello\r\n\r\n")
    assert b"error" in raw


# --- nothing leaks ----------------------------------------------------------------

def _resources(pid):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    return fds, threads, rss


def test_bad_requests_leak_nothing(server):
    def settle():
        time.sleep(0.5)
        return _resources(server.proc.pid)

    for _ in range(50):  # reach steady state (allocator caches) first
        server.request("POST", SELFTEST_INFER, b'{"inputs": [')
    fds0, threads0, rss0 = settle()
    for i in range(300):
        body = BAD_JSON_CASES[sorted(BAD_JSON_CASES)[i % len(BAD_JSON_CASES)]][0]
        server.request("POST", SELFTEST_INFER, body)
        server.infer("conv2d-selftest", GOOD)
    fds1, threads1, rss1 = settle()
    assert fds1 <= fds0 + 2, (fds0, fds1)
    assert threads1 <= threads0 + 2, (threads0, threads1)
    assert rss1 - rss0 < 30 * 1024, (rss0, rss1)  # KiB
    assert server.get_json("/v2/health/ready")[0] == 200
