"""The conv2d-selftest model: exact definition, in-process and over HTTP."""

import json
import random
import struct

from conftest import SELFTEST_INFER
from torch_backend import selftest


def flatten(nested):
    if isinstance(nested, list):
        return [v for item in nested for v in flatten(item)]
    return [nested]


def test_documented_input_formula():
    x = selftest.DOCUMENTED_INPUT
    assert len(x) == 1 and len(x[0]) == 1 and len(x[0][0]) == 8
    for i in range(8):
        for j in range(8):
            assert x[0][0][i][j] == ((3 * i + 5 * j) % 11) - 5


def test_reference_by_hand():
    # Two values worked out by hand: cross-correlation (kernel not flipped),
    # zero padding. At (0, 0) the Sobel kernel sees padding in row -1 and
    # column -1, leaving -2*p[0][1] (centre row) and -1*p[1][1] (bottom row).
    x = selftest.DOCUMENTED_INPUT
    p = x[0][0]
    out = selftest.reference_output(x)
    assert out[0][0][0][0] == -2 * p[0][1] - p[1][1] + 0.5
    assert out[0][1][3][3] == p[2][3] + p[4][3] + p[3][2] + p[3][4] - 4 * p[3][3] - 0.25


def test_torch_model_matches_reference_exactly():
    import torch

    model = selftest.build_model()
    rng = random.Random(1)
    batch = [[[[float(rng.randint(-9, 9)) for _ in range(8)] for _ in range(8)]] for _ in range(3)]
    for x in (selftest.DOCUMENTED_INPUT, batch):
        with torch.inference_mode():
            got = model(torch.tensor(x, dtype=torch.float32)).tolist()
        assert got == selftest.reference_output(x)


def test_json_inference_matches_reference(server):
    payload = {"id": "req-1", "inputs": [{"name": "input", "shape": [1, 1, 8, 8],
                                          "datatype": "FP32", "data": selftest.DOCUMENTED_INPUT}]}
    status, _, body = server.infer("conv2d-selftest", payload)
    assert status == 200, body
    resp = json.loads(body)
    assert resp["model_name"] == "conv2d-selftest" and resp["id"] == "req-1"
    (out,) = resp["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("output", "FP32", [1, 2, 8, 8])
    assert out["data"] == flatten(selftest.reference_output(selftest.DOCUMENTED_INPUT))


def test_flat_json_batch_of_three(server):
    rng = random.Random(7)
    x = [[[[float(rng.randint(-5, 5)) for _ in range(8)] for _ in range(8)]] for _ in range(3)]
    payload = {"inputs": [{"name": "input", "shape": [3, 1, 8, 8], "datatype": "FP32",
                           "data": flatten(x)}]}
    status, _, body = server.infer("conv2d-selftest", payload)
    assert status == 200, body
    out = json.loads(body)["outputs"][0]
    assert out["shape"] == [3, 2, 8, 8]
    assert out["data"] == flatten(selftest.reference_output(x))


def test_binary_inference_matches_reference(server):
    x = flatten(selftest.DOCUMENTED_INPUT)
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
    assert values == flatten(selftest.reference_output(selftest.DOCUMENTED_INPUT))


def test_binary_input_json_output(server):
    blob = struct.pack("<64f", *flatten(selftest.DOCUMENTED_INPUT))
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 256}}]}).encode()
    status, headers, body = server.request(
        "POST", SELFTEST_INFER, header + blob, {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200 and "inference-header-content-length" not in headers
    assert json.loads(body)["outputs"][0]["data"] == flatten(
        selftest.reference_output(selftest.DOCUMENTED_INPUT))


def test_binary_data_output_request_parameter(server):
    payload = {"parameters": {"binary_data_output": True},
               "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                           "data": selftest.DOCUMENTED_INPUT}]}
    status, headers, body = server.infer("conv2d-selftest", payload)
    assert status == 200
    json_len = int(headers["inference-header-content-length"])
    assert list(struct.unpack("<128f", body[json_len:])) == flatten(
        selftest.reference_output(selftest.DOCUMENTED_INPUT))
