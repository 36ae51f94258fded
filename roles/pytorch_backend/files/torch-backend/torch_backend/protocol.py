"""Open Inference Protocol (KServe v2) inference requests and responses.

Covers the JSON tensor form and the binary tensor data extension:

* request: a JSON header of ``Inference-Header-Content-Length`` bytes, then the
  raw little-endian bytes of every input whose ``parameters.binary_data_size``
  is set, in the order the inputs appear in the header;
* response: outputs asked for with ``parameters.binary_data`` (or all outputs,
  with request-level ``parameters.binary_data_output``) are appended as raw
  bytes after the JSON header, whose length goes into the response header
  ``Inference-Header-Content-Length``.

Everything a client can get wrong raises ProtocolError with a message meant
for that client; it becomes a 4xx ``{"error": ...}`` response. This module
works on numpy arrays only; torch is the worker's business.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import orjson

from .models import BF16, Model

HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class InferRequest:
    id: Optional[str]
    arrays: List[np.ndarray]           # one per model input, in model order
    outputs: List[Tuple[str, bool]]    # (output name, as binary), response order


def _is_int(value) -> bool:
    return type(value) is int  # bool is an int subclass; a shape of `true` is nonsense


def _parameters(obj: dict, where: str) -> dict:
    params = obj.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ProtocolError(f"{where}.parameters must be an object")
    return params


def _check_shape(spec, shape, where: str) -> int:
    """Validate a request shape against the declared one; return the element count."""
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise ProtocolError(f"{where}.shape must be a list of integers")
    if len(shape) != len(spec.shape):
        raise ProtocolError(f"{where}.shape {shape} has {len(shape)} dimensions, "
                            f"model expects {len(spec.shape)} (shape {list(spec.shape)})")
    for got, want in zip(shape, spec.shape):
        if got < 1:
            raise ProtocolError(f"{where}.shape {shape}: dimensions must be >= 1")
        if want != -1 and got != want:
            raise ProtocolError(f"{where}.shape {shape} does not match the model's "
                                f"{list(spec.shape)} (-1 = any size)")
    return math.prod(shape)


def _nonfinite(spec, array: np.ndarray) -> bool:
    if spec.datatype == BF16:  # raw bit patterns: an all-ones exponent is Inf or NaN
        return bool((array & 0x7F80 == 0x7F80).any())
    return array.dtype.kind == "f" and not np.isfinite(array).all()


def _finite(spec, array: np.ndarray, where: str) -> None:
    if _nonfinite(spec, array):
        raise ProtocolError(f"{where}: values must be finite numbers within "
                            f"the range of the datatype (no NaN/Inf)")


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values -> bfloat16 bit patterns (uint16), rounded to nearest even."""
    bits = values.astype(np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 values (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _kinds(spec) -> str:
    """The numpy kinds JSON data may have for the spec's datatype."""
    if spec.datatype == "BOOL":
        return "b"
    return "iuf" if spec.is_float else "iu"


def _from_json_data(spec, data, shape, count: int, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise ProtocolError(f"{where}.data must be a list (flat or nested to the shape)")
    try:
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ProtocolError(f"{where}.data must be a flat list of numbers or "
                            f"lists nested exactly to the shape") from None
    if raw.dtype.kind in "fO" and not spec.is_float and spec.datatype != "BOOL":
        # Integers past INT64's range make numpy infer float64 (or object), losing
        # digits: take them as the declared type, exactly, if they fit.
        exact = np.asarray(data, dtype=object)
        if exact.size and all(type(v) is int for v in exact.ravel()):
            try:
                raw = np.asarray(exact.tolist(), dtype=spec.dtype.newbyteorder("="))
            except OverflowError:
                raise ProtocolError(f"{where}.data has values outside the {spec.datatype} "
                                    f"range") from None
    if raw.size and raw.dtype.kind not in _kinds(spec):
        kind = ("true/false" if spec.datatype == "BOOL" else
                "numbers" if spec.is_float else "integers")
        raise ProtocolError(f"{where}.data must contain only {kind} for datatype {spec.datatype}")
    if raw.size != count:
        raise ProtocolError(f"{where}: shape {shape} needs {count} values, data has {raw.size}")
    if raw.ndim != 1 and list(raw.shape) != shape:
        raise ProtocolError(f"{where}.data is nested as {list(raw.shape)}, which is neither "
                            f"flat nor the shape {shape}")
    native = spec.dtype.newbyteorder("=")
    if native.kind in "iu" and not spec.is_float:
        info = np.iinfo(native)
        if raw.size and (int(raw.min()) < info.min or int(raw.max()) > info.max):
            raise ProtocolError(f"{where}.data has values outside the {spec.datatype} range")
    # Out-of-range floats become inf here and are rejected just below; the
    # errstate keeps numpy from printing a RuntimeWarning into the journal.
    with np.errstate(over="ignore", invalid="ignore"):
        if spec.datatype == BF16:
            array = bf16_bits(raw.astype(np.float32)).reshape(shape)
        else:
            array = raw.astype(native).reshape(shape)
    _finite(spec, array, where)
    return array


def _json_error(text, exc) -> str:
    # orjson reports a NaN or Infinity literal as an "unexpected character"; name it instead.
    near = bytes(text[exc.pos:exc.pos + 8])
    for literal in (b"NaN", b"Infinity"):
        if near.startswith(literal):
            return (f"request is not valid JSON: non-finite number {literal.decode()} at "
                    f"character {exc.pos} (JSON has no NaN or Infinity)")
    detail = str(exc) if len(str(exc)) < 200 else "invalid JSON"
    return f"request is not valid JSON: {detail}"


def _loads_other_encoding(header, exc):
    """What orjson refused, if it is UTF-16 or UTF-32 (or UTF-8 after a byte order mark),
    which json.loads also takes and the service has always accepted; else a ProtocolError."""
    encoding = json.detect_encoding(bytes(header[:4]))
    if encoding != "utf-8":
        try:
            return orjson.loads(bytes(header).decode(encoding))
        except UnicodeDecodeError:
            pass
        except orjson.JSONDecodeError as retry:
            exc = retry
    raise ProtocolError(_json_error(header, exc)) from None


def parse_infer(model: Model, body, header_length: Optional[str]) -> InferRequest:
    """Parse and validate an infer request body against the model's metadata."""
    if not body:
        raise ProtocolError("empty request body; expected an inference request JSON object")
    view = memoryview(body)
    if header_length is not None:
        try:
            json_len = int(header_length.strip(), 10)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be a decimal integer") from None
        if not 0 < json_len <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {json_len} is outside the body "
                                f"(body is {len(body)} bytes)")
        header, binary = view[:json_len], view[json_len:]
    else:
        header, binary = view, view[:0]

    # orjson, not json: 5x faster on a ResNet-18 input's 150,528 numbers (docs/performance.md).
    # It also refuses what the protocol does: NaN/Infinity literals, numbers that overflow a
    # double, text that is not UTF-8, nesting past 1,024 levels.
    try:
        request = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        request = _loads_other_encoding(header, exc)
    if not isinstance(request, dict):
        raise ProtocolError("request must be a JSON object")

    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("id must be a string")
    params = _parameters(request, "request")
    all_binary = params.get("binary_data_output", False)
    if not isinstance(all_binary, bool):
        raise ProtocolError("parameters.binary_data_output must be true or false")

    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError('"inputs" must be a non-empty list')
    specs = {s.name: s for s in model.inputs}
    arrays = {}
    offset = 0
    for i, item in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise ProtocolError(f"{where} must be an object")
        name = item.get("name")
        if not isinstance(name, str):
            raise ProtocolError(f"{where}.name must be a string")
        spec = specs.get(name)
        if spec is None:
            raise ProtocolError(f"{where}: model {model.name!r} has no input {name!r} "
                                f"(inputs: {sorted(specs)})")
        if name in arrays:
            raise ProtocolError(f"{where}: input {name!r} given twice")
        where = f"input {name!r}"
        if item.get("datatype") == "BYTES" and spec.datatype != "BYTES":
            raise ProtocolError(f"{where}: datatype BYTES (strings) is not accepted: the model "
                                f"declares {spec.datatype!r}, a numeric tensor")
        if item.get("datatype") != spec.datatype:
            raise ProtocolError(f"{where}: datatype {item.get('datatype')!r} does not match the "
                                f"model's {spec.datatype!r}")
        shape = item.get("shape")
        count = _check_shape(spec, shape, where)

        size = _parameters(item, where).get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise ProtocolError(f"{where} has neither data nor parameters.binary_data_size")
            arrays[name] = _from_json_data(spec, item["data"], shape, count, where)
            continue
        if header_length is None:
            raise ProtocolError(f"{where} has binary_data_size but the request has no "
                                f"{HEADER_LENGTH} header")
        if "data" in item:
            raise ProtocolError(f"{where} has both data and binary_data_size")
        if not _is_int(size) or size < 0:
            raise ProtocolError(f"{where}.parameters.binary_data_size must be an integer >= 0")
        needed = count * spec.dtype.itemsize
        if size != needed:
            raise ProtocolError(f"{where}: binary_data_size {size} but shape {shape} of "
                                f"{spec.datatype} needs {needed} bytes")
        if offset + size > len(binary):
            raise ProtocolError(f"{where}: binary data ends at byte {offset + size} after the "
                                f"JSON header, but only {len(binary)} bytes follow it")
        raw = np.frombuffer(binary, dtype=spec.dtype, count=count, offset=offset)
        # Copy: the slice may be unaligned, and the request buffer should not
        # outlive the request inside a tensor.
        array = raw.astype(spec.dtype.newbyteorder("="), copy=True).reshape(shape)
        if spec.datatype == "BOOL" and (array.view(np.uint8) > 1).any():
            raise ProtocolError(f"{where}: BOOL binary data must be bytes 0 or 1")
        _finite(spec, array, where)
        arrays[name] = array
        offset += size
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes after the JSON header are not "
                            f"claimed by any input's binary_data_size")
    missing = [s.name for s in model.inputs if s.name not in arrays]
    if missing:
        raise ProtocolError(f"missing input(s) {missing} for model {model.name!r}")

    out_names = {s.name for s in model.outputs}
    wanted = request.get("outputs")
    if wanted is None:
        outputs = [(s.name, all_binary) for s in model.outputs]
    else:
        if not isinstance(wanted, list) or not wanted:
            raise ProtocolError('"outputs" must be a non-empty list when given')
        outputs, seen = [], set()
        for i, item in enumerate(wanted):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ProtocolError(f"outputs[{i}] must be an object with a string name")
            name = item["name"]
            if name not in out_names:
                raise ProtocolError(f"outputs[{i}]: model {model.name!r} has no output "
                                    f"{name!r} (outputs: {sorted(out_names)})")
            if name in seen:
                raise ProtocolError(f"outputs[{i}]: output {name!r} requested twice")
            seen.add(name)
            binary_flag = _parameters(item, f"outputs[{i}]").get("binary_data", all_binary)
            if not isinstance(binary_flag, bool):
                raise ProtocolError(f"outputs[{i}].parameters.binary_data must be true or false")
            outputs.append((name, binary_flag))

    return InferRequest(request_id, [arrays[s.name] for s in model.inputs], outputs)


def encode_infer_response(model: Model, request: InferRequest,
                          results: Sequence[np.ndarray]) -> Tuple[List[bytes], Optional[int]]:
    """Body chunks and, when binary outputs are present, the JSON header length."""
    by_name = {s.name: (s, a) for s, a in zip(model.outputs, results)}
    entries, blobs = [], []
    for name, binary in request.outputs:
        spec, array = by_name[name]
        entry = {"name": name, "datatype": spec.datatype, "shape": list(array.shape)}
        if binary:
            blob = array.astype(spec.dtype, copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if _nonfinite(spec, array):
                raise ProtocolError(f"output {name!r} contains NaN or Inf, which JSON cannot "
                                    f"carry (input values too large for the model?); ask for it "
                                    f"with parameters.binary_data=true to get the raw values")
            values = bf16_values(array) if spec.datatype == BF16 else array
            entry["data"] = values.ravel().tolist()
        entries.append(entry)
    response = {"model_name": model.name, "model_version": model.versions[-1]}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = entries
    header = orjson.dumps(response)
    if not blobs:
        return [header], None
    return [header] + blobs, len(header)


# Upper bounds of one value's JSON text with its comma: a float32 widened to a
# Python float prints up to 24 characters ("-1.2345678901234567e-300,").
_JSON_VALUE_BYTES = {"f": 25, "i": 21, "u": 21, "b": 6}


def check_response_size(model: Model, request: InferRequest, results: Sequence[np.ndarray],
                        limit: int) -> None:
    """Refuse, before encoding anything, a response that could exceed `limit` bytes:
    JSON text of a large tensor is ~10x its raw bytes, and building it would
    hold the whole text in memory."""
    by_name = {s.name: a for s, a in zip(model.outputs, results)}
    raw = estimate = 0
    json_names = []
    for name, binary in request.outputs:
        array = by_name[name]
        raw += array.nbytes
        if binary:
            estimate += array.nbytes
        else:
            estimate += array.size * _JSON_VALUE_BYTES.get(array.dtype.kind, 25)
            json_names.append(name)
    if estimate <= limit:
        return
    if json_names and raw <= limit:
        raise ProtocolError(f"response too large: output(s) {json_names} as JSON could take up "
                            f"to {estimate} bytes, over the limit of {limit} bytes "
                            f"(TORCH_BACKEND_MAX_RESPONSE_BYTES); ask for binary output "
                            f"(parameters.binary_data_output=true, or binary_data=true per "
                            f"output: {raw} bytes raw)")
    raise ProtocolError(f"response too large: {raw} bytes of output even as binary data, over "
                        f"the limit of {limit} bytes (TORCH_BACKEND_MAX_RESPONSE_BYTES)")
