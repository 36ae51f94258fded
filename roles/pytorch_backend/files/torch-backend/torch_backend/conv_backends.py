"""Which convolution backend each Conv2d layer of a model runs on, on this host.

torch chooses a backend per call (aten/src/ATen/native/Convolution.cpp): oneDNN
(``Mkldnn``) first, NNPACK (``NnpackSpatial``) only for fp32 at batch >= 16, else
the slow direct path (``Slow2d``). The choice depends on the input's shape, the
layer's parameters and the flags in force (``torch.backends.mkldnn``,
``torch.backends.nnpack``, which nnpack.apply has set by the time this runs).
``torch._C._select_conv_backend`` names that choice without convolving; this
module asks it for every Conv2d layer at batch 1 and at batch 16, so "turning
NNPACK off changes no code path here" is a fact reported per host and model.

How each layer's real input shape is found: TorchScript modules take no forward
hooks, and static shape propagation gives up on models with control flow. So
one forward pass on the warm-up input (zeros, variable dimensions 1) runs under
a TorchDispatchMode that sees every ``aten.convolution`` call with its real
arguments, and asks for the backend right there: at batch 1 with the real
input, at batch 16 with an uninitialized tensor of the same shape (never
touched: no memory is committed for it). The pass runs under ``no_grad``, not
``inference_mode``: under inference mode the JIT hands the mode ``aten.conv2d``
before it decomposes, with string paddings among its overloads.

Models whose inputs are not batched (a fixed first dimension) are asked at the
batches they declare scaled by 1 and by 16 all the same: the figure says what
a call 16 times as large would run on.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Iterable, List, Sequence

BATCHES = (1, 16)
SLOW = "Slow2d"


def _backend(inp, weight, bias, stride, padding, dilation, transposed, output_padding, groups) -> str:
    import torch

    return torch._C._select_conv_backend(inp, weight, bias, list(stride), list(padding),
                                         list(dilation), bool(transposed), list(output_padding),
                                         groups, None).name


def _recorder(base_batch: int):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    conv = torch.ops.aten.convolution.default

    class Recorder(TorchDispatchMode):
        """Asks for the backend of each 2-D, non-transposed convolution it sees."""

        def __init__(self):
            super().__init__()
            self.layers: List[dict] = []

        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            # Else the class is made by wrapping this handler in torch._disable_dynamo,
            # which imports torch._dynamo: 4-12 s of start-up measured, for a handler
            # that nothing ever compiles.
            return False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is conv:
                self._ask(*args)
            return func(*args, **(kwargs or {}))

        def _ask(self, inp, weight, bias, stride, padding, dilation, transposed, output_padding,
                 groups):
            if weight.dim() != 4 or transposed:
                return
            params = (weight, bias, stride, padding, dilation, transposed, output_padding, groups)
            shape = list(inp.shape)
            backends = {}
            for batch in BATCHES:
                # dimension 0 of a layer's input grows with the model's batch
                size = shape[0] * batch // base_batch if shape[0] % base_batch == 0 else shape[0]
                probe = inp if size == shape[0] else torch.empty(
                    [size] + shape[1:], dtype=inp.dtype,
                    memory_format=(torch.channels_last if inp.is_contiguous(
                        memory_format=torch.channels_last) and not inp.is_contiguous()
                        else torch.contiguous_format))
                backends[f"batch_{batch}"] = _backend(probe, *params)
            self.layers.append({"input": shape, "weight": list(weight.shape),
                                "stride": list(stride), "padding": list(padding),
                                "dilation": list(dilation), "groups": int(groups), **backends})

    return Recorder()


def count(layers: Iterable[dict], batch: int) -> dict:
    """{backend: number of layers} at one batch, most frequent first."""
    return dict(Counter(layer[f"batch_{batch}"] for layer in layers).most_common())


def of_model(module, tensors: Sequence) -> dict:
    """The backends of a model's Conv2d layers, from one forward pass on `tensors`
    (the warm-up input, first dimension = the batch it stands for)."""
    import torch

    start = time.perf_counter()
    recorder = _recorder(int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1)
    with torch.no_grad(), recorder:
        module(*tensors)
    layers = recorder.layers
    return {
        "mkldnn_enabled": bool(torch._C._get_mkldnn_enabled()),
        "nnpack_enabled": bool(torch._C._get_nnpack_enabled()),
        "layers": layers,
        **{f"batch_{b}": count(layers, b) for b in BATCHES},
        "slow2d": any(layer[f"batch_{b}"] == SLOW for layer in layers for b in BATCHES),
        "seconds": round(time.perf_counter() - start, 4),
    }


def describe(report: dict) -> str:
    """One log line's worth: 'batch 1: Mkldnn x20; batch 16: Mkldnn x20'."""
    if "error" in report:
        return f"unknown ({report['error']})"
    if not report["layers"]:
        return "no Conv2d layers"
    return "; ".join(f"batch {b}: " + ", ".join(f"{k} x{n}" for k, n in report[f"batch_{b}"].items())
                     for b in BATCHES)


def host_summary(models) -> dict:
    """What GET /v2 carries for the role: per model the counts (no layer list), and
    the served-from-file models with a layer on Slow2d. The built-in self-test is
    listed but never flagged: a 1-channel 8x8 batch-1 convolution is one oneDNN
    declines by design (it is the call that makes torch ask NNPACK)."""
    per_model = {}
    slow = []
    for model in models:
        report = model.conv_backends
        if report is None:
            continue
        entry = {"builtin": model.builtin}
        if "error" in report:
            entry["error"] = report["error"]
        else:
            entry.update({"layers": len(report["layers"]), "slow2d": report["slow2d"],
                          **{f"batch_{b}": report[f"batch_{b}"] for b in BATCHES}})
            if report["slow2d"] and not model.builtin:
                slow.append(model.name)
        per_model[model.name] = entry
    import torch

    return {"mkldnn_enabled": bool(torch._C._get_mkldnn_enabled()),
            "nnpack_enabled": bool(torch._C._get_nnpack_enabled()),
            "batches": list(BATCHES), "models": per_model, "slow2d": sorted(slow)}
