"""Request generators shared by tests/service/test_fuzz.py and the fuzzer's run (cases.py).

Hypothesis strategies for inference request bodies aimed at the running
service: mostly well-formed Open Inference Protocol JSON with one or more
things wrong (types, shapes, datatypes, binary sizes, headers), plus raw
bytes and arbitrary JSON. ``requests()`` draws ``(path, body, headers)``.

Nothing here imports torch.
"""

import json
import math
import struct

from hypothesis import strategies as st

from .reference import DOCUMENTED_INPUT, INFER

# Not the "slow" test model: its run time is whatever number the input holds.
PATHS = [INFER, INFER, "/v2/models/unknown/infer", "/v2/models/resnet18/infer"]

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
numbers = st.one_of(finite, st.integers(-10, 10), st.floats(), st.integers())
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)

shapes = st.one_of(
    st.just([1, 1, 8, 8]), st.just([2, 1, 8, 8]), st.just([1, 1]),
    st.lists(st.integers(-2, 9), max_size=5),
    st.lists(st.one_of(st.integers(), st.booleans(), st.floats(), st.text(max_size=2)), max_size=4),
    json_values)


@st.composite
def tensors(draw):
    """One input entry, usually close to valid."""
    shape = draw(shapes)
    entry = {"name": draw(st.sampled_from(["input", "x", "other", ""])) if draw(st.booleans())
             else draw(json_values),
             "datatype": draw(st.sampled_from(["FP32", "FP32", "FP64", "INT32", "BYTES"])),
             "shape": shape}
    count = math.prod(shape) if (isinstance(shape, list) and shape
                                 and all(type(d) is int and 0 <= d <= 256 for d in shape)) else 64
    how = draw(st.sampled_from(["exact", "nested", "random", "binary", "none"]))
    if how == "exact" and count <= 256:
        entry["data"] = draw(st.lists(numbers, min_size=count, max_size=count))
    elif how == "exact":  # too many to draw one by one: repeat one value
        entry["data"] = [draw(numbers)] * min(count, 20_000)
    elif how == "nested" and isinstance(shape, list) and shape == [1, 1, 8, 8]:
        entry["data"] = DOCUMENTED_INPUT
    elif how == "random":
        entry["data"] = draw(json_values)
    elif how == "binary":
        entry["parameters"] = {"binary_data_size": draw(st.one_of(
            st.just(count * 4), st.integers(-8, 600), json_values))}
    if draw(st.integers(0, 9)) == 0:
        entry["parameters"] = draw(json_values)
    return entry


@st.composite
def requests(draw, paths=PATHS):
    """(path, body bytes, headers)."""
    path = draw(st.sampled_from(paths))
    kind = draw(st.sampled_from(["bytes", "json", "structured", "structured", "structured"]))
    headers = {}
    if kind == "bytes":
        body = draw(st.binary(max_size=512))
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    else:
        req = {"inputs": draw(st.lists(tensors(), min_size=0, max_size=3))}
        if draw(st.booleans()):
            req["outputs"] = draw(st.one_of(
                st.lists(st.fixed_dictionaries(
                    {"name": st.sampled_from(["output", "y", "nope"])},
                    optional={"parameters": st.one_of(
                        st.fixed_dictionaries({"binary_data": st.booleans()}), json_values)}),
                    max_size=2),
                json_values))
        if draw(st.booleans()):
            req["id"] = draw(json_values)
        if draw(st.integers(0, 4)) == 0:
            req["parameters"] = draw(st.one_of(
                st.fixed_dictionaries({"binary_data_output": st.booleans()}), json_values))
        header = json.dumps(req).encode()
        blob = b"".join(struct.pack("<f", v) for v in draw(st.lists(finite, max_size=80)))
        if draw(st.booleans()):
            length = draw(st.one_of(st.just(len(header)), st.integers(-5, len(header) + 400)))
            headers["Inference-Header-Content-Length"] = str(length)
            body = header + blob
        else:
            body = header
    if draw(st.integers(0, 9)) == 0:
        headers["Inference-Header-Content-Length"] = draw(st.text(
            alphabet="0123456789-+ x", max_size=6))
    return path, body, headers
