"""The protocol's numeric datatypes (issue 13): a model may declare BOOL, UINT8-64, INT8-64,
FP16, BF16, FP32 and FP64, and they go through JSON and the binary extension unchanged;
BYTES is refused with a clear 400. On main such a model refused to load."""

import json

import numpy as np
import pytest
from conftest import ServerProcess

# datatype -> (numpy dtype of its bytes on the wire, two values at the datatype's edges)
CASES = {
    "BOOL": ("?", [True, False]),
    "UINT8": ("u1", [0, 255]), "UINT16": ("<u2", [0, 65535]),
    "UINT32": ("<u4", [0, 2 ** 32 - 1]), "UINT64": ("<u8", [0, 2 ** 64 - 1]),
    "INT8": ("i1", [-128, 127]), "INT16": ("<i2", [-32768, 32767]),
    "INT32": ("<i4", [-2 ** 31, 2 ** 31 - 1]), "INT64": ("<i8", [-2 ** 63, 2 ** 63 - 1]),
    "FP16": ("<f2", [1.5, -65504.0]), "FP32": ("<f4", [1.5, -3.4028234663852886e38]),
    "FP64": ("<f8", [1.5, -1.0e300]),
    # bfloat16 has float32's range with 8 bits of mantissa; on the wire, its 16-bit patterns
    "BF16": (None, [1.5, -3.3895313892515355e38]),
}
BF16_BITS = np.array([0x3FC0, 0xFF7F], dtype="<u2")  # 1.5 and bfloat16's lowest


def write_identity_model(directory):
    """y_T = x_T for every datatype T, in one TorchScript model."""
    import torch

    from torch_backend.models import sha256_file

    names = [t.lower() for t in CASES]

    class Identity(torch.nn.Module):
        def forward(self, *xs):
            return tuple(x.clone() for x in xs)

    dtypes = {"BOOL": torch.bool, "UINT8": torch.uint8, "UINT16": torch.uint16,
              "UINT32": torch.uint32, "UINT64": torch.uint64, "INT8": torch.int8,
              "INT16": torch.int16, "INT32": torch.int32, "INT64": torch.int64,
              "FP16": torch.float16, "FP32": torch.float32, "FP64": torch.float64,
              "BF16": torch.bfloat16}
    examples = tuple(torch.zeros(2, dtype=dtypes[t]) for t in CASES)
    module = torch.jit.trace(Identity(), examples)
    directory.mkdir(parents=True, exist_ok=True)
    pt = directory / "identity.pt"
    torch.jit.save(module, str(pt))
    meta = {"inputs": [{"name": f"x_{n}", "datatype": t, "shape": [-1]} for n, t in zip(names, CASES)],
            "outputs": [{"name": f"y_{n}", "datatype": t, "shape": [-1]} for n, t in zip(names, CASES)],
            "sha256": sha256_file(str(pt))}
    (directory / "identity.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("datatypes")
    write_identity_model(tmp / "models")
    server = ServerProcess(tmp, {"TORCH_BACKEND_MODEL_DIR": str(tmp / "models")}).start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.terminate()


def json_request():
    return {"inputs": [{"name": f"x_{t.lower()}", "datatype": t, "shape": [2], "data": values}
                       for t, (_, values) in CASES.items()]}


def test_model_declaring_every_numeric_datatype_loads(srv):
    status, meta = srv.get_json("/v2/models/identity")
    assert status == 200
    assert [i["datatype"] for i in meta["inputs"]] == list(CASES)


def test_json_round_trip_keeps_every_value(srv):
    status, _, body = srv.infer("identity", json_request())
    assert status == 200, body
    outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
    for t, (_, values) in CASES.items():
        out = outputs[f"y_{t.lower()}"]
        assert (out["datatype"], out["shape"], out["data"]) == (t, [2], values), t


def test_binary_round_trip_keeps_every_byte(srv):
    blobs, inputs = [], []
    for t, (dtype, values) in CASES.items():
        blob = (BF16_BITS if t == "BF16" else np.array(values, dtype=dtype)).tobytes()
        blobs.append(blob)
        inputs.append({"name": f"x_{t.lower()}", "datatype": t, "shape": [2],
                       "parameters": {"binary_data_size": len(blob)}})
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    status, headers, body = srv.infer("identity", header + b"".join(blobs),
                                      {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200, body
    json_len = int(headers["inference-header-content-length"])
    outputs = json.loads(body[:json_len])["outputs"]
    rest = body[json_len:]
    for out, blob in zip(outputs, blobs):
        size = out["parameters"]["binary_data_size"]
        assert rest[:size] == blob, out["name"]
        rest = rest[size:]
    assert rest == b""


@pytest.mark.parametrize("datatype,data,fragment", [
    ("UINT8", [256, 0], "outside the UINT8 range"),
    ("UINT64", [-1, 0], "outside the UINT64 range"),
    ("INT8", [1.5, 0], "only integers"),
    ("BOOL", [1, 0], "only true/false"),
    ("FP16", [70000.0, 0], "finite"),
    ("BF16", [3.4e38, 0], "finite"),
])
def test_values_outside_a_datatype_are_400(srv, datatype, data, fragment):
    request = json_request()
    item = next(i for i in request["inputs"] if i["datatype"] == datatype)
    item["data"] = data
    status, _, body = srv.infer("identity", request)
    assert status == 400 and fragment in json.loads(body)["error"], body


def test_bytes_is_refused_clearly(srv):
    request = json_request()
    request["inputs"][0] = {"name": "x_bool", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}
    status, _, body = srv.infer("identity", request)
    assert status == 400 and "BYTES" in json.loads(body)["error"], body
