"""Models: metadata, checksum, loading, warm-up and the forward call.

A model directory holds, per model, ``NAME.pt`` (TorchScript, ``torch.jit.save``)
and ``NAME.json``::

    {"inputs":  [{"name": "input",  "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
     "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}],
     "sha256": "<hex of NAME.pt>"}          # optional; verified before loading

-1 marks a variable dimension. Names and metadata follow model_rules.py, the
rules the role's preflight applies on the controller too. Every problem is a
ModelError naming the model: the service refuses to start rather than serve
half its models.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np

from . import model_rules, selftest

PLATFORM = "pytorch_torchscript"

# Open Inference Protocol datatype (model_rules.DATATYPES) -> numpy dtype (little-endian
# on the wire). numpy has no bfloat16: BF16 tensors travel as their raw 16-bit patterns
# (uint16) and become torch.bfloat16 only inside run().
DATATYPES = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BF16 = "BF16"
FLOAT_DATATYPES = ("FP16", "BF16", "FP32", "FP64")


class ModelError(Exception):
    def __init__(self, model: str, problem: str):
        super().__init__(f"model {model!r}: {problem}")
        self.model = model


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple  # ints; -1 = any size >= 1

    @property
    def dtype(self) -> np.dtype:
        return DATATYPES[self.datatype]

    @property
    def is_float(self) -> bool:
        return self.datatype in FLOAT_DATATYPES

    def as_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _first(model: str, problems: List[str]) -> None:
    if problems:
        raise ModelError(model, problems[0])


def check_name(name: str) -> None:
    """A ModelError unless `name` may name a model from the model directory."""
    _first(name, model_rules.name_problems(name))


def _parse_specs(model: str, meta: dict, key: str) -> List[TensorSpec]:
    items = meta.get(key)
    _first(model, model_rules.tensor_problems(f"metadata {key}", items))
    return [TensorSpec(item["name"], item["datatype"], tuple(item["shape"])) for item in items]


def check_metadata(name: str, meta: Any) -> tuple:
    """(inputs, outputs) of a model's metadata; a ModelError if it breaks a rule
    (a sha256, optional here, must be well-formed when given)."""
    if not isinstance(meta, dict):
        raise ModelError(name, "metadata must be a JSON object")
    inputs = _parse_specs(name, meta, "inputs")
    outputs = _parse_specs(name, meta, "outputs")
    if meta.get("sha256") is not None:
        _first(name, ["metadata " + p for p in model_rules.sha256_problems(meta["sha256"])])
    return inputs, outputs


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Model:
    """A loaded model with its declared tensors; ``run`` is thread-safe."""

    # One version per model: the metadata lists it, the versioned routes
    # (/v2/models/{name}/versions/{v}/...) answer for it, responses name it.
    versions = ("1",)

    def __init__(self, name: str, module: Any, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec], source: str):
        self.name = name
        self.module = module
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.source = source
        self.platform = PLATFORM
        # the Conv2d backends its warm-up recorded (conv_backends.py; None before)
        self.conv_backends: Optional[dict] = None

    @property
    def builtin(self) -> bool:
        return self.source == "built-in"

    def metadata(self) -> dict:
        meta = {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [s.as_dict() for s in self.inputs],
            "outputs": [s.as_dict() for s in self.outputs],
        }
        if self.conv_backends is not None:  # an extension field, as "nnpack" is on /v2
            meta["conv_backends"] = self.conv_backends
        return meta

    def run(self, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Forward pass; arrays are in declared input order, already validated."""
        import torch

        tensors = [_to_torch(torch, spec, a) for spec, a in zip(self.inputs, arrays)]
        with torch.inference_mode():
            result = self.module(*tensors)
        if isinstance(result, torch.Tensor):
            result = [result]
        elif isinstance(result, dict):
            result = [result[s.name] for s in self.outputs]
        result = list(result)
        if len(result) != len(self.outputs):
            raise ModelError(self.name, f"returned {len(result)} outputs, metadata declares "
                                        f"{len(self.outputs)}")
        out = []
        for spec, tensor in zip(self.outputs, result):
            array = _from_torch(torch, spec, tensor.detach().contiguous())
            if array.ndim != len(spec.shape) or any(
                    d != -1 and d != n for d, n in zip(spec.shape, array.shape)):
                raise ModelError(self.name, f"output {spec.name!r} has shape {list(array.shape)}, "
                                            f"metadata declares {list(spec.shape)}")
            out.append(array)
        return out

    def warm_up_arrays(self) -> List[np.ndarray]:
        """Zeros in the declared shapes, variable dims = 1."""
        return [np.zeros([1 if d == -1 else d for d in s.shape], dtype=s.dtype)
                for s in self.inputs]

    def warm_up(self) -> None:
        """One inference on zeros (variable dims = 1): proves the model runs
        here and pays one-time costs (TorchScript optimisation, allocator)
        before the service reports ready. The same pass records which backend
        each Conv2d layer runs on (conv_backends.py) into `conv_backends`."""
        from . import conv_backends

        arrays = self.warm_up_arrays()
        recorder = conv_backends.recorder(arrays[0].shape[0] if arrays and arrays[0].ndim else 1)
        try:
            with recorder:
                self.run(arrays)
        except Exception as exc:  # noqa: BLE001 - told apart below
            # The model's own failure fails again without the recorder and stops the
            # start as before; one the recorder caused costs the report, not the start.
            self.run(arrays)
            self.conv_backends = {"error": f"{type(exc).__name__}: {exc}"}
            return
        self.conv_backends = recorder.report()


def _to_torch(torch, spec: TensorSpec, array: np.ndarray):
    native = array.astype(array.dtype.newbyteorder("="), copy=False)
    if spec.datatype == BF16:
        return torch.from_numpy(native.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(native)


def _from_torch(torch, spec: TensorSpec, tensor) -> np.ndarray:
    if spec.datatype == BF16:
        return tensor.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    if tensor.dtype == torch.bfloat16:  # numpy cannot take it: widen first
        tensor = tensor.float()
    return tensor.numpy().astype(spec.dtype, copy=False)


def builtin_models() -> List[Model]:
    meta = selftest.metadata()
    return [Model(selftest.MODEL_NAME, selftest.build_model(),
                  _parse_specs(selftest.MODEL_NAME, meta, "inputs"),
                  _parse_specs(selftest.MODEL_NAME, meta, "outputs"), "built-in")]


def load_file_model(name: str, pt_path: str, json_path: str) -> Model:
    import torch

    try:
        with open(json_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelError(name, f"cannot read metadata {json_path}: {exc}") from None
    if not isinstance(meta, dict):
        raise ModelError(name, f"metadata {json_path} must be a JSON object")
    inputs, outputs = check_metadata(name, meta)

    expected = meta.get("sha256")
    if expected is not None:
        actual = sha256_file(pt_path)
        if actual != expected:
            raise ModelError(name, f"sha256 mismatch for {pt_path}: metadata says "
                                   f"{expected}, file has {actual}; refusing to load")
    try:
        module = torch.jit.load(pt_path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds
        raise ModelError(name, f"cannot load TorchScript {pt_path}: {exc}") from None
    module.eval()
    return Model(name, module, inputs, outputs, pt_path)


def scan_model_dir(model_dir: str) -> List[tuple]:
    """(name, pt_path, json_path) for each model in the directory, sorted.

    A missing directory means "built-in models only"; a half model (only
    .pt or only .json) is an error, as is a name the built-ins already use.
    """
    if not os.path.isdir(model_dir):
        return []
    stems = {}
    for entry in sorted(os.listdir(model_dir)):
        stem, ext = os.path.splitext(entry)
        if ext in (".pt", ".json") and not stem.startswith("."):
            stems.setdefault(stem, set()).add(ext)
    found = []
    for name, exts in sorted(stems.items()):
        check_name(name)
        if exts != {".pt", ".json"}:
            missing = ({".pt", ".json"} - exts).pop()
            raise ModelError(name, f"{name}{missing} is missing in {model_dir}")
        found.append((name, os.path.join(model_dir, name + ".pt"),
                      os.path.join(model_dir, name + ".json")))
    return found
