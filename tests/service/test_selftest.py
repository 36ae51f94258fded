"""The conv2d-selftest model: exact definition, in-process and over HTTP, against the one
pure-Python reference (the role's filter plugin, conftest.reference)."""

import json
import random
import struct

from conftest import (SELFTEST_EXPECTED, SELFTEST_INFER, SELFTEST_INPUT, SELFTEST_PAYLOAD,
                      reference)
from torch_backend import selftest


def flatten(nested):
    if isinstance(nested, list):
        return [v for item in nested for v in flatten(item)]
    return [nested]


def test_documented_input_formula():
    x = SELFTEST_INPUT
    assert len(x) == 1 and len(x[0]) == 1 and len(x[0][0]) == 8
    for i in range(8):
        for j in range(8):
            assert x[0][0][i][j] == ((3 * i + 5 * j) % 11) - 5


def test_reference_by_hand():
    # Two values worked out by hand: cross-correlation (kernel not flipped),
    # zero padding. At (0, 0) the Sobel kernel sees padding in row -1 and
    # column -1, leaving -2*p[0][1] (centre row) and -1*p[1][1] (bottom row).
    # Flat, row-major [1, 2, 8, 8]: out[0, o, i, j] is at (o * 8 + i) * 8 + j.
    p = SELFTEST_INPUT[0][0]
    out = reference.conv2d_reference(SELFTEST_INPUT)
    assert out[0] == -2 * p[0][1] - p[1][1] + 0.5
    assert out[(8 + 3) * 8 + 3] == p[2][3] + p[4][3] + p[3][2] + p[3][4] - 4 * p[3][3] - 0.25


def test_torch_model_matches_reference_exactly():
    import torch

    model = selftest.build_model()
    rng = random.Random(1)
    batch = [[[[float(rng.randint(-9, 9)) for _ in range(8)] for _ in range(8)]] for _ in range(3)]
    for x in (SELFTEST_INPUT, batch):
        with torch.inference_mode():
            got = model(torch.tensor(x, dtype=torch.float32)).flatten().tolist()
        assert got == reference.conv2d_reference(x)


def test_json_inference_matches_reference(server):
    payload = dict(SELFTEST_PAYLOAD, id="req-1")
    status, _, body = server.infer("conv2d-selftest", payload)
    assert status == 200, body
    resp = json.loads(body)
    assert resp["model_name"] == "conv2d-selftest" and resp["id"] == "req-1"
    (out,) = resp["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("output", "FP32", [1, 2, 8, 8])
    assert out["data"] == SELFTEST_EXPECTED


def test_flat_json_batch_of_three(server):
    rng = random.Random(7)
    x = [[[[float(rng.randint(-5, 5)) for _ in range(8)] for _ in range(8)]] for _ in range(3)]
    payload = {"inputs": [{"name": "input", "shape": [3, 1, 8, 8], "datatype": "FP32",
                           "data": flatten(x)}]}
    status, _, body = server.infer("conv2d-selftest", payload)
    assert status == 200, body
    out = json.loads(body)["outputs"][0]
    assert out["shape"] == [3, 2, 8, 8]
    assert out["data"] == reference.conv2d_reference(x)


def test_binary_inference_matches_reference(server):
    x = flatten(SELFTEST_INPUT)
    blob = struct.pack("<64f", *x)
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "output",
                                      "parameters": {"binary_data": True}}]}).encode()
    status, headers, body = server.request(
        "POST", SELFTEST_INFER, header + blob,
        {"Inference-Header-Content-Length": str(len(header)),
         "Content-Type": "application/octet-stream"})
    assert status == 200, body
    json_len = int(headers["inference-header-content-length"])
    meta = json.loads(body[:json_len])
    (out,) = meta["outputs"]
    assert out["shape"] == [1, 2, 8, 8] and "data" not in out
    assert out["parameters"]["binary_data_size"] == 128 * 4 == len(body) - json_len
    values = list(struct.unpack("<128f", body[json_len:]))
    assert values == SELFTEST_EXPECTED


def test_binary_input_json_output(server):
    blob = struct.pack("<64f", *flatten(SELFTEST_INPUT))
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 256}}]}).encode()
    status, headers, body = server.request(
        "POST", SELFTEST_INFER, header + blob, {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200 and "inference-header-content-length" not in headers
    assert json.loads(body)["outputs"][0]["data"] == SELFTEST_EXPECTED


def test_binary_data_output_request_parameter(server):
    payload = dict(SELFTEST_PAYLOAD, parameters={"binary_data_output": True})
    status, headers, body = server.infer("conv2d-selftest", payload)
    assert status == 200
    json_len = int(headers["inference-header-content-length"])
    assert list(struct.unpack("<128f", body[json_len:])) == SELFTEST_EXPECTED
