"""How the fuzzer judges an answer: conv2d-selftest in numpy and what an accepted request asked for.

The numpy reference is fast enough for batches of thousands (the near-limit
cases); before it judges anything it is checked against the one pure-Python
reference, the role's controller-side filter plugin
(roles/pytorch_backend/filter_plugins/selftest.py) that every deploy verifies
the service with.
"""

import json
import math
import sys

import numpy as np

from harness import role_filter_plugin
from torch_backend import selftest

MODEL = selftest.MODEL_NAME
INFER = f"/v2/models/{MODEL}/infer"
IHCL = "Inference-Header-Content-Length"

CONTROLLER = role_filter_plugin("selftest")
DOCUMENTED_INPUT = CONTROLLER.selftest_input(8)   # [1, 1, 8, 8]

WEIGHTS = np.array(selftest.WEIGHTS, dtype=np.float64)   # [2, 3, 3]: the model the service runs
BIAS = np.array(selftest.BIAS, dtype=np.float64)
F32_MAX = float(np.finfo(np.float32).max)


def reference(x, weights=WEIGHTS, bias=BIAS):
    """conv2d-selftest in numpy, float64; x shaped [B, 1, H, W] -> [B, 2, H, W]."""
    x = np.asarray(x, dtype=np.float64)
    b, _, h, w = x.shape
    padded = np.zeros((b, h + 2, w + 2))
    padded[:, 1:-1, 1:-1] = x[:, 0]
    out = np.empty((b, 2, h, w))
    for o in range(2):
        acc = np.zeros((b, h, w))
        for di in range(3):
            for dj in range(3):
                acc += weights[o, di, dj] * padded[:, di:di + h, dj:dj + w]
        out[:, o] = acc + bias[o]
    return out


def check_reference(rnd):
    """The numpy conv must agree with the role's pure-Python reference before it judges anything."""
    inputs = [DOCUMENTED_INPUT]
    for _ in range(20):
        b = rnd.choice([1, 2, 3])
        inputs.append([[[[rnd.randint(-9, 9) for _ in range(8)] for _ in range(8)]]
                       for _ in range(b)])
    for x in inputs:
        role = np.array(CONTROLLER.conv2d_reference(x), dtype=np.float64)
        if not np.array_equal(reference(x).ravel(), role):
            sys.exit("fuzz-service: the numpy reference disagrees with the role's pure-Python one")
    floats = [[[[rnd.uniform(-50, 50) for _ in range(8)] for _ in range(8)]]]
    if not np.allclose(reference(floats).ravel(), CONTROLLER.conv2d_reference(floats),
                       rtol=1e-12, atol=1e-12):
        sys.exit("fuzz-service: the numpy reference disagrees with the role's pure-Python one "
                 "(floats)")
    return len(inputs) + 1


def decode_selftest_request(body, headers):
    """What a request the server accepted asks for: (x float32 [B,1,8,8], binary output?, id).

    Written from the protocol, not from the server's code; raises on anything
    the fuzzer does not consider a valid request.
    """
    length = headers.get(IHCL.lower())
    if length is not None:
        n = int(length.strip(), 10)
        header, binary = body[:n], body[n:]
    else:
        header, binary = body, b""
    req = json.loads(header)
    params = req.get("parameters") or {}
    all_binary = params.get("binary_data_output", False)
    (inp,) = req["inputs"]
    shape = inp["shape"]
    size = (inp.get("parameters") or {}).get("binary_data_size")
    if size is None:
        x = np.asarray(inp["data"]).astype(np.float32).reshape(shape)
    else:
        x = np.frombuffer(bytes(binary), dtype="<f4", count=math.prod(shape)).reshape(shape)
    outputs = req.get("outputs")
    if outputs is None:
        want_binary = all_binary
    else:
        (out,) = outputs
        want_binary = (out.get("parameters") or {}).get("binary_data", all_binary)
    return x, bool(want_binary), req.get("id")


def verify_selftest_reply(request, resp):
    """None if the 200 reply to `request` is right, else why not.

    request: (body, lower-case headers), or (body, headers, (x, binary output?, id))
    when the generator already knows what it asked for (the near-limit cases,
    whose bodies are too big to decode again cheaply).
    """
    try:
        x, want_binary, req_id = (request[2] if len(request) > 2
                                  else decode_selftest_request(*request))
    except Exception as exc:  # noqa: BLE001
        return f"200 for a request the fuzzer cannot decode ({type(exc).__name__}: {exc})"
    batch = x.shape[0]
    try:
        hl = resp.headers.get(IHCL.lower())
        big = None
        if hl is not None:
            n = int(hl)
            reply, blob = json.loads(resp.body[:n]), resp.body[n:]
        elif len(resp.body) > 1 << 20:
            # Megabytes of numbers: json.loads takes many seconds (on a busy
            # machine, tens). Read the flat "data" list with numpy, the rest
            # of the reply with json.
            start = resp.body.index(b'"data":[') + len(b'"data":[')
            end = resp.body.index(b"]", start)
            big = np.fromstring(resp.body[start:end], dtype=np.float64, sep=",")
            reply, blob = json.loads(resp.body[:start] + resp.body[end:]), b""
        else:
            reply, blob = json.loads(resp.body), b""
        (out,) = reply["outputs"]
        if (out["name"], out["datatype"], out["shape"]) != ("output", "FP32", [batch, 2, 8, 8]):
            return f"wrong output entry {json.dumps(out)[:200]}"
        if reply.get("model_name") != MODEL or reply.get("id") != req_id:
            return f"wrong model_name/id in {str(reply)[:200]}"
        if want_binary:
            if "data" in out or hl is None:
                return "asked for binary output, got JSON data"
            size = out["parameters"]["binary_data_size"]
            if size != batch * 2 * 64 * 4 or len(blob) != size:
                return f"binary_data_size {size}, {len(blob)} bytes follow the header"
            got = np.frombuffer(blob, dtype="<f4").astype(np.float64)
        else:
            if "data" not in out or blob:
                return "asked for JSON output, got binary"
            got = np.array(big if big is not None else out["data"], dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        return f"malformed 200 reply ({type(exc).__name__}: {exc}): {resp.body[:200]!r}"
    want = reference(x).ravel()
    if got.shape != want.shape:
        return f"{got.size} output values, expected {want.size}"
    # float32 arithmetic: 9 products and a bias per value. Tolerance scales with
    # the magnitudes involved; where those reach float32's range, overflow is
    # the model's business and the value is not judged.
    scale = reference(np.abs(x), np.abs(WEIGHTS), np.abs(BIAS)).ravel()
    judged = scale < F32_MAX / 4
    bad = judged & ~(np.abs(got - want) <= 1e-5 * scale + 1e-6)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        return (f"wrong numbers: {int(bad.sum())} of {got.size} values differ, e.g. "
                f"[{i}] got {got[i]!r}, reference {want[i]!r}")
    return None
