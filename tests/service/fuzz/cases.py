"""The generated cases, by category (GENERATORS), the near-limit ones and the Hypothesis ones."""

import json
import math
import re
from urllib.parse import quote, unquote

import numpy as np

from .client import BAD_LINE, Case, request_bytes
from .reference import DOCUMENTED_INPUT, IHCL, INFER, MODEL

BATCHES = [1, 1, 1, 1, 2, 2, 3, 4, 5, 8, 16, 64]


def rand_text(rnd, lo=1, hi=12, alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_."):
    return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(lo, hi)))


def odd_value(rnd, exclude=()):
    """A JSON value of a random type (for wrong-type fields)."""
    choices = [lambda: None, lambda: True, lambda: False, lambda: rnd.randint(-5, 5),
               lambda: rnd.uniform(-5, 5), lambda: rand_text(rnd), lambda: "",
               lambda: [], lambda: {}, lambda: [rand_text(rnd)], lambda: {"a": 1},
               lambda: [[1, 2], [3]]]
    while True:
        value = rnd.choice(choices)()
        if not any(type(value) is t for t in exclude):
            return value


def input_entry(x, binary):
    """The input entry for x [B, 1, 8, 8] and the bytes that follow the JSON header
    (b"" when the data is to go into the JSON)."""
    inp = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    if not binary:
        return inp, b""
    blob = x.astype("<f4").tobytes()
    inp["parameters"] = {"binary_data_size": len(blob)}
    return inp, blob


def selftest_parts(rnd, batch=None, values=None, input_form=None, output_form=None):
    """A valid request as (req dict, binary blob); the blob is b"" for JSON input."""
    batch = batch or rnd.choice(BATCHES)
    values = values or rnd.choice(["documented", "ints", "ints", "floats", "floats", "zeros"])
    rng = np.random.default_rng(rnd.getrandbits(32))
    if values == "documented":
        x = np.tile(np.array(DOCUMENTED_INPUT, dtype=np.float32), (batch, 1, 1, 1))
    elif values == "ints":
        x = rng.integers(-9, 10, size=(batch, 1, 8, 8)).astype(np.float32)
    elif values == "zeros":
        x = np.zeros((batch, 1, 8, 8), dtype=np.float32)
    else:
        x = (rng.standard_normal((batch, 1, 8, 8)) * 10.0 ** rnd.randint(-3, 3)).astype(np.float32)
    input_form = input_form or rnd.choice(["flat", "nested", "binary"])
    inp, blob = input_entry(x, input_form == "binary")
    if not blob:
        as_ints = values in ("ints", "documented", "zeros") and rnd.random() < 0.5
        data = x.astype(np.int64) if as_ints else x.astype(np.float64)
        inp["data"] = data.ravel().tolist() if input_form == "flat" else data.tolist()
    req = {}
    if rnd.random() < 0.3:
        req["id"] = rand_text(rnd, 0, 20)
    req["inputs"] = [inp]
    output_form = output_form or rnd.choice(["default", "json", "json-flag", "binary",
                                             "binary-all", "binary-all-override"])
    if output_form == "json":
        req["outputs"] = [{"name": "output"}]
    elif output_form == "json-flag":
        req["outputs"] = [{"name": "output", "parameters": {"binary_data": False}}]
    elif output_form == "binary":
        req["outputs"] = [{"name": "output", "parameters": {"binary_data": True}}]
    elif output_form == "binary-all":
        req["parameters"] = {"binary_data_output": True}
    elif output_form == "binary-all-override":
        req["parameters"] = {"binary_data_output": True}
        req["outputs"] = [{"name": "output", "parameters": {"binary_data": False}}]
    return req, blob, f"{input_form}->{output_form}"


def infer_case(category, sub, req, blob, expect=(400,), ihcl="auto", extra_headers=(),
               path=INFER, raw_header=None, **kw):
    """An infer POST; a 200 to it (if expected) is checked against the reference."""
    header = raw_header if raw_header is not None else json.dumps(req).encode()
    body = header + blob
    headers = [("Content-Type", "application/octet-stream" if blob else "application/json")]
    if ihcl == "auto":
        ihcl = str(len(header)) if blob else None
    if ihcl is not None:
        headers.append((IHCL, ihcl))
    headers += list(extra_headers)
    verify = (body, {IHCL.lower(): ihcl} if ihcl is not None else {})
    route = path.split("?", 1)[0]
    return Case(category, sub, request_bytes("POST", path, headers, body), expect=expect,
                verify=verify if route in (INFER, INFER + "/") else None, **kw)


def gen_valid(rnd, ctx):
    req, blob, sub = selftest_parts(rnd)
    variant = rnd.choices(["plain", "expect-100", "ihcl-on-json", "pipelined"], [80, 8, 6, 6])[0]
    if variant == "expect-100":
        return infer_case("valid", "expect-100 " + sub, req, blob, expect=(200,),
                          extra_headers=[("Expect", "100-continue")])
    if variant == "ihcl-on-json" and not blob:
        header = json.dumps(req).encode()
        return infer_case("valid", "ihcl-on-json " + sub, req, blob, expect=(200,),
                          ihcl=str(len(header)))
    if variant == "pipelined":
        case = infer_case("valid", "pipelined " + sub, req, blob, expect=(200,))
        case.data = request_bytes("GET", "/v2/health/ready") + case.data
        case.responses = 2
        return case
    return infer_case("valid", sub, req, blob, expect=(200,))


def gen_malformed_json(rnd, ctx):
    req, _, _ = selftest_parts(rnd, input_form=rnd.choice(["flat", "nested"]))
    text = json.dumps(req)
    sub = rnd.choice(["cut", "garbage", "nan-literal", "deep-nesting", "bad-utf8",
                      "trailing-garbage", "python-repr", "not-an-object", "empty",
                      "control-chars", "unicode-encodings"])
    if sub == "cut":
        raw = text[:rnd.randint(1, len(text) - 1)].encode()
    elif sub == "garbage":
        raw = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))
    elif sub == "nan-literal":
        raw = re.sub(r"(-?\d+(\.\d+)?(e-?\d+)?)(?=[,\]])",
                     rnd.choice(["NaN", "Infinity", "-Infinity"]), text,
                     count=rnd.randint(1, 3)).encode()
        if raw == text.encode():
            raw = b'{"inputs": NaN}'
    elif sub == "deep-nesting":
        depth = rnd.choice([100, 1000, 5000, 100_000])
        inner = "[" * depth + "]" * depth
        raw = rnd.choice([inner, '{"inputs": ' + inner + "}",
                          text.replace('"data": [', '"data": ' + "[" * depth, 1)
                          .replace("]", "]" * depth, 1)]).encode()
    elif sub == "bad-utf8":
        pos = rnd.randint(1, len(text) - 1)
        bad = rnd.choice([b"\xff", b"\xc3", b"\x80\x80", b"\xf8\x88\x80\x80"])
        raw = text[:pos].encode() + bad + text[pos:].encode()
        raw = b'{"id": "\xff\xfe", ' + raw[1:] if rnd.random() < 0.5 else raw
        # Not an encoded lone surrogate (b"\xed\xa0\x80"): Python's json reads
        # those ("surrogatepass"), so in an ignored key the request is valid.
    elif sub == "trailing-garbage":
        raw = text.encode() + rnd.choice([b"x", b"}", b"{}", b",", b"\x00", b"]"])
    elif sub == "python-repr":
        raw = repr(req).encode()
    elif sub == "not-an-object":
        raw = json.dumps(rnd.choice([[], [req], "inputs", 1, None, True, 2.5])).encode()
    elif sub == "empty":
        raw = rnd.choice([b"", b" ", b"\n", b"\x00"])
    elif sub == "control-chars":
        raw = text.replace('"input"', '"in\nput"', 1).replace('"FP32"', '"FP\x0032"', 1).encode()
    else:  # json.loads(bytes) also reads UTF-16/32 and a UTF-8 BOM: valid, if unusual
        enc = rnd.choice(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
        raw = text.encode(enc)
        return infer_case("malformed-json", f"{sub} {enc}", req, b"", expect=(200,), raw_header=raw)
    return infer_case("malformed-json", sub, req, b"", expect=(400,), raw_header=raw)


def gen_wrong_types(rnd, ctx):
    req, blob, _ = selftest_parts(rnd, input_form=rnd.choice(["flat", "nested", "binary"]))
    inp = req["inputs"][0]
    target = rnd.choice(["inputs", "inputs[0]", "name", "datatype", "shape", "data", "data-element",
                         "data-value", "id", "parameters", "binary_data_output", "outputs",
                         "outputs[0]", "output-name", "binary_data", "input-parameters",
                         "binary_data_size", "duplicate-input", "extra-input", "missing"])
    if target == "inputs":
        req["inputs"] = odd_value(rnd, exclude=(list,)) if rnd.random() < 0.8 else []
    elif target == "inputs[0]":
        req["inputs"] = [odd_value(rnd, exclude=(dict,))]
    elif target == "name":
        inp["name"] = rnd.choice([odd_value(rnd, exclude=(str,)), "x", "", "INPUT", "input ",
                                  "output", rand_text(rnd)])
    elif target == "datatype":
        inp["datatype"] = odd_value(rnd, exclude=(str,))
    elif target == "shape":
        inp["shape"] = rnd.choice([odd_value(rnd, exclude=(list,)), "[1, 1, 8, 8]",
                                   [float(d) for d in inp["shape"]], [True, 1, 8, 8],
                                   [inp["shape"][0], "1", 8, 8], [[1], 1, 8, 8], [None, 1, 8, 8]])
    elif target == "data":
        inp.pop("parameters", None)
        blob = b""
        inp["data"] = odd_value(rnd, exclude=(list,))
    elif target == "data-element":
        inp.pop("parameters", None)
        blob = b""
        flat = [1.0] * math.prod(inp["shape"])
        # Not True/False: numpy reads [1.0, True] as floats (accepted, harmlessly).
        flat[rnd.randrange(len(flat))] = rnd.choice([None, "1", "x", {}, [], [1.0, 2.0]])
        inp["data"] = flat
    elif target == "data-value":
        inp.pop("parameters", None)
        blob = b""
        flat = [1.0] * math.prod(inp["shape"])
        flat[rnd.randrange(len(flat))] = rnd.choice([1e39, -1e39, 3.5e38, 1e300, 10 ** 40,
                                                    -(10 ** 40), 10 ** 400])
        if rnd.random() < 0.3:
            flat = [int(v) if isinstance(v, float) else v for v in flat]
        inp["data"] = flat
    elif target == "id":
        req["id"] = odd_value(rnd, exclude=(str, type(None)))
    elif target == "parameters":
        req["parameters"] = odd_value(rnd, exclude=(dict, type(None)))
    elif target == "binary_data_output":
        req["parameters"] = {"binary_data_output": odd_value(rnd, exclude=(bool,))}
    elif target == "outputs":
        req["outputs"] = odd_value(rnd, exclude=(list, type(None))) if rnd.random() < 0.8 else []
    elif target == "outputs[0]":
        req["outputs"] = [odd_value(rnd, exclude=(dict,))]
    elif target == "output-name":
        req["outputs"] = rnd.choice([[{"name": odd_value(rnd, exclude=(str,))}], [{"name": "nope"}],
                                     [{}], [{"name": "output"}, {"name": "output"}]])
    elif target == "binary_data":
        req["outputs"] = [{"name": "output",
                           "parameters": rnd.choice([
                               {"binary_data": odd_value(rnd, exclude=(bool,))},
                               odd_value(rnd, exclude=(dict, type(None)))])}]
    elif target == "input-parameters":
        inp["parameters"] = odd_value(rnd, exclude=(dict, type(None)))
    elif target == "binary_data_size":
        if not blob:
            blob = np.zeros(inp["shape"], dtype="<f4").tobytes()
            inp.pop("data")
        inp["parameters"] = {"binary_data_size": rnd.choice(
            [str(len(blob)), float(len(blob)), True, [len(blob)], {"n": len(blob)}])}
    elif target == "duplicate-input":
        req["inputs"] = [inp, dict(inp)]
        blob = blob + blob
    elif target == "extra-input":
        req["inputs"].append({"name": rand_text(rnd), "shape": [1], "datatype": "FP32",
                              "data": [1]})
    else:
        key = rnd.choice(["inputs", "name", "datatype", "shape", "data"])
        if key == "inputs":
            del req["inputs"]
        elif key == "data" and blob:
            del inp["parameters"]
            blob = b""
        else:
            inp.pop(key, None)
    return infer_case("wrong-types", target, req, blob, expect=(400,))


def gen_bad_shape(rnd, ctx):
    req, blob, _ = selftest_parts(rnd, input_form=rnd.choice(["flat", "nested", "binary"]))
    inp = req["inputs"][0]
    b = inp["shape"][0]
    sub = rnd.choice(["rank", "dims", "zero-negative", "huge", "count", "nesting", "huge-binary"])
    if sub == "rank":
        shape = rnd.choice([[], [b], [b, 1, 8], [b, 1, 8, 8, 1], [b, 64], [b * 64],
                            [1, b, 1, 8, 8]])
    elif sub == "dims":
        shape = rnd.choice([[b, 2, 8, 8], [b, 1, 9, 8], [b, 1, 8, 7], [b, 1, 4, 16], [b, 8, 8, 1]])
    elif sub == "zero-negative":
        shape = list(inp["shape"])
        shape[rnd.randrange(4)] = rnd.choice([0, -1, -2, -(2 ** 31), -(2 ** 63), -(10 ** 30)])
    elif sub == "huge" or sub == "huge-binary":
        shape = list(inp["shape"])
        shape[0] = rnd.choice([2 ** 31, 2 ** 32 + 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 18,
                               10 ** 100, 2 ** 40])
        if sub == "huge-binary":
            inp.pop("data", None)
            blob = blob or np.zeros((1, 1, 8, 8), dtype="<f4").tobytes()
            inp["parameters"] = {"binary_data_size": rnd.choice([math.prod(shape) * 4, len(blob)])}
    elif sub == "count":
        shape = [b + rnd.choice([1, 2, -1 if b > 1 else 3]), 1, 8, 8]
    else:  # data nested to something that is neither flat nor the shape
        shape = list(inp["shape"])
        inp.pop("parameters", None)
        blob = b""
        flat = [0.0] * (b * 64)
        inp["data"] = rnd.choice([np.reshape(flat, (b, 8, 8)).tolist(),
                                  np.reshape(flat, (b, 1, 64)).tolist(),
                                  np.reshape(flat, (b * 8, 8)).tolist()])
    inp["shape"] = shape
    return infer_case("bad-shape", sub, req, blob, expect=(400,))


def gen_wrong_datatype(rnd, ctx):
    req, blob, _ = selftest_parts(rnd, input_form=rnd.choice(["flat", "binary"]))
    inp = req["inputs"][0]
    dtype = rnd.choice(["FP64", "FP16", "BF16", "INT32", "INT64", "INT8", "UINT8", "BOOL", "BYTES",
                        "fp32", "Fp32", "FP32 ", " FP32", "float32", "FLOAT", "", "FP3"])
    inp["datatype"] = dtype
    sub = dtype.strip() or "empty"
    if blob and dtype in ("FP64", "INT64") and rnd.random() < 0.5:  # bytes sized for that type
        blob = np.zeros(inp["shape"], dtype="<f8").tobytes()
        inp["parameters"]["binary_data_size"] = len(blob)
        sub += " (sized)"
    elif rnd.random() < 0.2:  # FP32 label, FP64-sized bytes
        inp["datatype"] = "FP32"
        blob = np.zeros(inp["shape"], dtype="<f8").tobytes()
        inp.pop("data", None)
        inp["parameters"] = {"binary_data_size": len(blob)}
        sub = "FP32 label, FP64 bytes"
    return infer_case("wrong-datatype", sub, req, blob, expect=(400,))


def gen_unknown_model(rnd, ctx):
    kind = rnd.choice(["random", "near-miss", "percent", "long", "dots", "unicode"])
    if kind == "random":
        name = rand_text(rnd, 1, 30)
    elif kind == "near-miss":
        name = rnd.choice([MODEL.upper(), MODEL + "x", MODEL[:-1], "conv2d_selftest", "resnet18",
                           "slow", MODEL + "%20", "%20" + MODEL, MODEL.replace("-", "%2D") + "2",
                           MODEL + "%00"])
    elif kind == "percent":
        name = "".join(rnd.choice(["%00", "%2F", "%3F", "%25", "%ff", "%20", "%0A", "a", "%2e"])
                       for _ in range(rnd.randint(1, 6)))
    elif kind == "long":
        name = "m" * rnd.choice([256, 1000, 4000])
    elif kind == "dots":
        name = rnd.choice([".", "..", "...", ".hidden", "a.b.c"])
    else:
        name = quote(rnd.choice(["ñ", "模型", "💥", "e\u0301", "\u202e"]) + rand_text(rnd, 0, 4))
    if unquote(name) in ctx["models"]:
        name += "x"
    action = rnd.choice(["/infer", "/infer", "", "/ready", "/infer/"])
    query = rnd.choice(["", "", "?x=1", "?"])
    target = f"/v2/models/{name}{action}{query}"
    if action.startswith("/infer"):
        req, blob, _ = selftest_parts(rnd)
        return infer_case("unknown-model", kind + " infer", req, blob, expect=(404,), path=target)
    method = rnd.choice(["GET", "HEAD"])
    return Case("unknown-model", f"{kind} {method} {action or 'metadata'}",
                request_bytes(method, target), method=method, expect=(404,))


def gen_binary_header(rnd, ctx):
    req, blob, _ = selftest_parts(rnd, input_form="binary")
    inp = req["inputs"][0]
    header = json.dumps(req).encode()
    n = len(header)
    sub = rnd.choice(["ihcl-bad", "ihcl-short", "ihcl-long", "ihcl-outside", "ihcl-lenient",
                      "size-mismatch", "bytes-missing", "bytes-extra", "no-ihcl",
                      "data-and-size", "non-finite", "ihcl-on-json-wrong"])
    if sub == "ihcl-bad":
        value = rnd.choice(["-1", "0", "-0", str(-n), "abc", "", " ", "1e3", "0x1F", f"{n}.0",
                            f"{n}abc", "9" * 40, str(2 ** 63), str(-(2 ** 63)), "--1", "NaN"])
        return infer_case("binary-header", sub, req, blob, ihcl=value)
    if sub == "ihcl-short":
        return infer_case("binary-header", sub, req, blob, ihcl=str(rnd.randint(1, n - 1)))
    if sub == "ihcl-long":  # the JSON header swallows part of the tensor bytes
        return infer_case("binary-header", sub, req, blob, ihcl=str(n + rnd.randint(1, len(blob))))
    if sub == "ihcl-outside":
        return infer_case("binary-header", sub, req, blob,
                          ihcl=str(n + len(blob) + rnd.choice([1, 2, 1000, 10 ** 9])))
    if sub == "ihcl-lenient":  # forms int() reads as the right number: valid
        value = rnd.choice([f"+{n}", f" {n} ", f"0{n}", f"00{n}\t"])
        return infer_case("binary-header", sub, req, blob, ihcl=value, expect=(200,))
    if sub == "size-mismatch":
        size = inp["parameters"]["binary_data_size"]
        inp["parameters"]["binary_data_size"] = rnd.choice(
            [size - 4, size + 4, size - 1, 0, -1, -size, size * 2, 2 ** 63, 10 ** 30])
        return infer_case("binary-header", sub, req, blob)
    if sub == "bytes-missing":
        return infer_case("binary-header", sub, req, blob[:rnd.randint(0, len(blob) - 1)])
    if sub == "bytes-extra":
        return infer_case("binary-header", sub, req, blob + b"\x00" * rnd.choice([1, 3, 4, 256]))
    if sub == "no-ihcl":
        return infer_case("binary-header", sub, req, blob, ihcl=None)
    if sub == "data-and-size":
        inp["data"] = [0.0] * math.prod(inp["shape"])
        return infer_case("binary-header", sub, req, blob)
    if sub == "non-finite":
        arr = np.frombuffer(blob, dtype="<f4").copy()
        arr[rnd.randrange(arr.size)] = rnd.choice([np.nan, np.inf, -np.inf])
        return infer_case("binary-header", sub, req, arr.astype("<f4").tobytes())
    # a JSON-only request with a header length that is not the body's
    req, _, _ = selftest_parts(rnd, input_form="flat")
    n = len(json.dumps(req).encode())
    return infer_case("binary-header", sub, req, b"",
                      ihcl=str(rnd.choice([n - 1, n + 1, 1, 10 ** 6, -n])))


def gen_truncated(rnd, ctx):
    req, blob, _ = selftest_parts(rnd)
    full = infer_case("truncated", "", req, blob).data
    head_end = full.index(b"\r\n\r\n") + 4
    sub = rnd.choice(["body", "body", "body", "headers", "request-line"])
    if sub == "body":
        cut = rnd.randint(head_end, len(full) - 1)
        expect = (400,)
    elif sub == "headers":
        first = full.index(b"\r\n") + 2
        cut = rnd.randint(first, head_end - 1)
        # The headers end at EOF: Content-Length may be missing (411), cut short
        # or complete, with no body behind it (400).
        expect = (400, 411)
    else:
        cut = rnd.randint(1, full.index(b"\r\n") + 1)
        # A request line and no headers, then EOF: h11 refuses it (400).
        expect = (400,)
    return Case("truncated", sub, full[:cut], expect=expect, fresh=True, shut_wr=True)


STATIC = {"/v2/health/live": ("GET", "HEAD"), "/v2/health/ready": ("GET", "HEAD"),
          "/v2": ("GET", "HEAD"), "/metrics": ("GET", "HEAD")}
KNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
MODEL_PATH_RE = re.compile(r"^/v2/models/([^/]+)(/ready|/infer)?/?$")


def expected_route_status(method, target, models):
    """What the routing table in the service's docstring implies (no request body)."""
    path = target.split("?", 1)[0]
    # (uvicorn keeps a path's leading slashes: "//v2" is no route.)
    path = unquote(path)
    match = MODEL_PATH_RE.match(path)
    if match:
        if match.group(1) not in models:
            return 404
        allowed = ("POST",) if match.group(2) == "/infer" else ("GET", "HEAD")
    else:
        allowed = STATIC.get(path.rstrip("/") or "/")
        if allowed is None:
            return 404
    return 200 if method in allowed else 405


def gen_method_path(rnd, ctx):
    routes = list(STATIC) + [f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/ready", INFER]
    unknown = ["/", "/v1", "/v2/models", "/v2/models/", "/v2/health", "/v2/health/alive",
               "/metrics/x", "/favicon.ico", "/v2//health/live", f"/v2/models/{MODEL}/infer/x",
               f"/v2/models/{MODEL}//infer", "//v2", "/V2", "/v2/health/live/..",
               "/" + rand_text(rnd, 1, 40, "abc/%.-_"), "*", "/%", "/%zz", "/v2/models/%2F/infer"]
    kind = rnd.choices(["known", "unknown-path", "unknown-method"], [60, 25, 15])[0]
    target = rnd.choice(routes) if kind != "unknown-path" else rnd.choice(unknown)
    if rnd.random() < 0.2 and kind == "known":
        target += rnd.choice(["/", "?a=1", "?", "?x=%00&y"])
    if kind == "unknown-method":
        method = rnd.choice(["FOO", "TRACE", "CONNECT", "PROPFIND", "get", "Post", "LINK", "QUERY",
                             "M" * 200])
        # h11 takes any token as a method: the route answers 405 (or 404 off the routes).
        return Case("method-path", "unknown method", request_bytes(method, target), method=method,
                    expect=(404, 405))
    method = rnd.choice(KNOWN_METHODS)
    expect = expected_route_status(method, target, ctx["models"])
    if expect == 200 and method == "POST":  # the infer route: a valid request
        req, blob, sub = selftest_parts(rnd)
        return infer_case("method-path", "POST infer", req, blob, expect=(200,), path=target)
    body = b""
    if rnd.random() < 0.3:  # a body the route does not want (the server leaves it unread)
        body = json.dumps(selftest_parts(rnd, batch=1)[0]).encode()
    return Case("method-path", f"{kind} {method}", request_bytes(method, target, body=body),
                method=method, expect=(expect,))


def gen_oversized(rnd, ctx):
    limit = ctx["max_body"]
    length = rnd.choice([limit + 1, limit + 2, limit + 4096, 2 * limit, 2 ** 40, 2 ** 63,
                         10 ** 30])
    sub = rnd.choices(["headers-only", "partial-body", "expect-100", "full-body", "other-route"],
                      [30, 30, 20, 8, 12])[0]
    headers = [("Content-Type", "application/json"), ("Content-Length", str(length))]
    target, expect, method = INFER, (413,), "POST"
    if sub == "expect-100":
        headers.append(("Expect", "100-continue"))
        target = rnd.choice([INFER, INFER, "/v2/health/live", "/nope"])  # refused before routing
    body = b""
    if sub == "partial-body":
        body = rnd.randbytes(rnd.choice([1, 100, 65536]))
    elif sub == "full-body":
        length = limit + rnd.randint(1, 1000)
        headers[1] = ("Content-Length", str(length))
        body = b"[" * length
    elif sub == "other-route":  # any route: the size is refused before routing
        method = rnd.choice(["POST", "GET", "PUT"])
        target = rnd.choice(["/v2/health/live", "/nope", f"/v2/models/{MODEL}",
                             "/v2/models/x/infer"])
        body = rnd.randbytes(rnd.choice([0, 100]))
    if len(str(length)) > 20:
        expect = (400,)  # h11 refuses a Content-Length of more than 20 digits
    data = request_bytes(method, target, headers, content_length=False) + body
    return Case("oversized", sub, data, method=method, expect=expect, fresh=True, timeout=120)


# h11 parses HTTP/d.d only; the service answers a major version other than 1 with 505.
VERSIONS = [("HTTP/1.0", 200), ("HTTP/1.1", 200), ("HTTP/1.2", 200), ("HTTP/01.1", BAD_LINE),
            ("HTTP/2.0", 505), ("HTTP/3.0", 505), ("HTTP/9.9", 505),
            ("HTTP/1", BAD_LINE), ("HTTP/1.1.1", BAD_LINE), ("HTTP/a.b", BAD_LINE),
            ("http/1.1", BAD_LINE), ("HTTPS/1.1", BAD_LINE), ("HTTP/", BAD_LINE),
            ("HTTP/1.-1", BAD_LINE), ("HTTP/11111111111.1", BAD_LINE)]


def gen_http_garbage(rnd, ctx):
    sub = rnd.choice(["garbage-line", "version", "http0.9", "long-header", "many-headers",
                      "long-request-line", "no-colon", "obs-fold", "bare-lf", "nul-header",
                      "chunked", "no-content-length", "bad-content-length", "empty-connection",
                      "lone-crlf", "spaces"])
    get_live = "/v2/health/live"
    if sub == "garbage-line":
        alphabet = [bytes([i]) for i in range(256) if i not in (10, 13)]
        line = b"".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 120)))
        if line.split() and line.split()[0] == b"GET":
            line = b"X" + line
        return Case("http-garbage", sub, line + b"\r\n\r\n", expect=(BAD_LINE,), fresh=True)
    if sub == "version":
        version, status = rnd.choice(VERSIONS)
        return Case("http-garbage", f"version {version}",
                    request_bytes("GET", get_live, version=version), method="GET",
                    expect=(status,), allow_5xx=(505,), fresh=True)
    if sub == "http0.9":
        # h11 speaks HTTP/1.x only: an HTTP/0.9 request line is refused.
        return Case("http-garbage", sub, f"GET {get_live}\r\n".encode(), method="GET",
                    expect=(BAD_LINE,), fresh=True, shut_wr=True)
    if sub == "long-header":
        long_value = "a" * rnd.choice([65537, 70000, 200000])
        data = request_bytes("GET", get_live, [("X-Long", long_value)])
        return Case("http-garbage", sub, data, method="GET", expect=(431,), fresh=True)
    if sub == "many-headers":
        headers = [(f"X-H{i}", "v") for i in range(rnd.choice([101, 150, 1000]))]
        return Case("http-garbage", sub, request_bytes("GET", get_live, headers), method="GET",
                    expect=(431,), fresh=True)
    if sub == "long-request-line":
        target = get_live + "?" + "a" * rnd.choice([65537, 100000])
        # 414 from the app when the line arrives whole, 431 from h11 when it is still
        # incomplete past 16 KiB.
        return Case("http-garbage", sub, request_bytes("GET", target), method="GET",
                    expect=(414, 431), fresh=True)
    if sub in ("no-colon", "obs-fold", "nul-header"):
        extra = {"no-colon": b"NoColonHere\r\n", "obs-fold": b"X-A: a\r\n  folded\r\n",
                 "nul-header": b"X-Nul: a\x00b\xff\r\n"}[sub]
        data = request_bytes("GET", get_live)
        data = data[:-2] + extra + b"\r\n"
        # h11 (RFC 9112 §5) refuses a field line without a colon and a NUL in a value;
        # obs-fold it unfolds.
        expect = (200,) if sub == "obs-fold" else (400,)
        return Case("http-garbage", sub, data, method="GET", expect=expect, fresh=True)
    if sub == "bare-lf":
        data = request_bytes("GET", get_live).replace(b"\r\n", b"\n")
        return Case("http-garbage", sub, data, method="GET", expect=(200,), fresh=True)
    if sub == "spaces":
        data = rnd.choice([b"GET  /v2/health/live  HTTP/1.1\r\n\r\n",
                           b"GET /v2/health/live HTTP/1.1 extra\r\n\r\n",
                           b" GET /v2/health/live HTTP/1.1\r\n\r\n"])
        return Case("http-garbage", sub, data, method="GET", expect=(BAD_LINE,), fresh=True)
    if sub == "empty-connection":
        return Case("http-garbage", sub, b"", expect=("none",), fresh=True, shut_wr=True)
    if sub == "lone-crlf":
        # h11 reads "\r\n\r\n" as a request with no request line (400).
        return Case("http-garbage", sub, b"\r\n" * rnd.randint(1, 3), expect=("none", 400), fresh=True,
                    shut_wr=True)
    req, blob, _ = selftest_parts(rnd, batch=1)
    body = json.dumps(req).encode() + blob
    headers = [(IHCL, str(len(body) - len(blob)))] if blob else []
    if sub == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        data = request_bytes("POST", INFER, headers, content_length=False) + chunked
        return Case("http-garbage", sub, data, expect=(411,), fresh=True)
    if sub == "no-content-length":
        data = request_bytes("POST", INFER, headers, content_length=False) + body
        return Case("http-garbage", sub, data, expect=(411,), fresh=True, shut_wr=True)
    value = rnd.choice(["-1", "abc", "1e3", "0x10", "", f"+{len(body)}", f"{len(body)}.0",
                        f"{len(body)} {len(body)}", "-0"])
    headers.append(("Content-Length", value))
    data = request_bytes("POST", INFER, headers, content_length=False) + body
    return Case("http-garbage", f"content-length {value!r}", data, expect=(400,), fresh=True)


def gen_client_abort(rnd, ctx):
    req, blob, _ = selftest_parts(rnd)
    full = infer_case("client-abort", "", req, blob).data
    head_end = full.index(b"\r\n\r\n") + 4
    sub = rnd.choice(["mid-headers", "mid-body", "before-reading-answer"])
    cut = {"mid-headers": rnd.randint(1, head_end - 1),
           "mid-body": rnd.randint(head_end, len(full) - 1),
           "before-reading-answer": len(full)}[sub]
    return Case("client-abort", sub, full[:cut], expect=("none",), fresh=True, abort="rst")


def near_limit_cases(rnd, ctx, count):
    """Valid requests whose body is just under the limit (binary, JSON->binary, JSON->JSON)."""
    limit = ctx["max_body"]
    forms = [("binary", "binary"), ("flat", "binary"), ("flat", "json")]
    cases = []
    for i in range(count):
        input_form, output_form = forms[i % len(forms)]
        per_sample = 256 if input_form == "binary" else 64 * 2  # "d," per value
        batch = max(1, (limit - 300) // per_sample)
        while True:
            rng = np.random.default_rng(rnd.getrandbits(32))
            x = rng.integers(0, 10, size=(batch, 1, 8, 8))
            inp, blob = input_entry(x, input_form == "binary")
            if not blob:
                inp["data"] = []
            req = {"inputs": [inp], "outputs": [{"name": "output", "parameters":
                                                 {"binary_data": output_form == "binary"}}]}
            header = json.dumps(req, separators=(",", ":")).encode()
            if input_form != "binary":  # the digits, written by numpy: json.dumps takes seconds
                text = np.full(2 * x.size - 1, ord(","), dtype=np.uint8)
                text[0::2] = x.ravel() + ord("0")
                head, tail = header.split(b'"data":[]', 1)
                header = head + b'"data":[' + text.tobytes() + b"]" + tail
            if len(header) + len(blob) <= limit:
                break
            batch -= max(1, batch // 100)
        # Twice as many outputs as inputs: as JSON text they would be hundreds of MiB, over
        # TORCH_BACKEND_MAX_RESPONSE_BYTES (64 MiB), so the service refuses them (400,
        # pointing to binary output) before encoding anything.
        expect = (200,) if output_form == "binary" else (400,)
        case = infer_case("near-limit", f"{input_form}->{output_form} batch {batch} "
                          f"{(len(header) + len(blob)) / 2 ** 20:.1f} MiB", req, blob,
                          expect=expect, raw_header=header, fresh=True, timeout=600)
        case.verify += ((x.astype(np.float32), output_form == "binary", None),)
        cases.append(case)
    return cases


GENERATORS = {  # category: (generator, weight per 100 cases)
    "valid": (gen_valid, 16),
    "malformed-json": (gen_malformed_json, 8),
    "wrong-types": (gen_wrong_types, 10),
    "bad-shape": (gen_bad_shape, 8),
    "wrong-datatype": (gen_wrong_datatype, 5),
    "unknown-model": (gen_unknown_model, 6),
    "binary-header": (gen_binary_header, 10),
    "truncated": (gen_truncated, 5),
    "method-path": (gen_method_path, 10),
    "oversized": (gen_oversized, 3),
    "http-garbage": (gen_http_garbage, 9),
}


def hypothesis_cases(count, seed):
    """`count` requests drawn from the property test's generator (strategies.requests)."""
    if count <= 0:
        return []
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hyp_seed

    from . import strategies

    drawn = []

    @hyp_seed(seed)
    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(req=strategies.requests())
    def collect(req):
        drawn.append(req)

    collect()
    cases = []
    for path, body, headers in drawn[:count]:
        hdrs = [(k, v) for k, v in headers.items()]
        lower = {k.lower(): v for k, v in headers.items()}
        case = Case("hypothesis", "structured" if body[:1] == b"{" else "other",
                    request_bytes("POST", path, hdrs, body), expect=(200, 400),
                    verify=(body, lower) if path == INFER else None)
        if path != INFER:  # unknown-model and resnet18 (not loaded here)
            case.expect = (404,)
        cases.append(case)
    return cases
