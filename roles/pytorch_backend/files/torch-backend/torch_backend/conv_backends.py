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
the warm-up pass the service runs anyway (models.Model.warm_up: zeros, variable
dimensions 1, under inference mode like every request) runs under a
TorchDispatchMode that sees every convolution with its real arguments and asks
for the backend right there: at batch 1 with the real input, at batch 16 with an
uninitialized tensor of the same shape (never touched: no memory is committed
for it). No pass is added: the cost is the mode's per-op overhead and the
queries, which compute nothing.

Under inference mode the JIT's ``aten::conv2d`` reaches the mode before it
decomposes (string paddings through ``aten._convolution_mode``); the recorder
decomposes those itself, with the mode back on, which is what the dispatcher
would do next, so it sees the ``aten.convolution`` each becomes and the model
computes what it computes without the mode.

Models whose inputs are not batched (a fixed first dimension) are asked at the
batches they declare scaled by 1 and by 16 all the same: the figure says what
a call 16 times as large would run on.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Iterable, List

BATCHES = (1, 16)
SLOW = "Slow2d"


def _backend(inp, weight, bias, stride, padding, dilation, transposed, output_padding, groups) -> str:
    import torch

    return torch._C._select_conv_backend(inp, weight, bias, list(stride), list(padding),
                                         list(dilation), bool(transposed), list(output_padding),
                                         groups, None).name


def recorder(base_batch: int):
    """A dispatch mode to run a model's warm-up pass under (`base_batch`: the first
    dimension of the warm-up input); its report() says what it saw."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    composite = {aten.conv2d.default, aten.conv2d.padding, aten._convolution_mode.default}
    # aten._convolution too: a traced model calls it directly
    convolutions = {aten.convolution.default, aten._convolution.default}

    class Recorder(TorchDispatchMode):
        """Asks for the backend of each 2-D, non-transposed convolution it sees."""

        def __init__(self):
            super().__init__()
            self.layers: List[dict] = []
            self.error = None
            self.seconds = 0.0  # spent asking

        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            # Else the class is made by wrapping this handler in torch._disable_dynamo,
            # which imports torch._dynamo: 4-12 s of start-up measured, for a handler
            # that nothing ever compiles.
            return False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in composite:
                with self:
                    out = func.decompose(*args, **kwargs)
                if out is not NotImplemented:
                    return out
            if func in convolutions and self.error is None:
                start = time.perf_counter()
                try:
                    self._ask(*args[:9])
                except Exception as exc:  # noqa: BLE001 - the report says so; the pass goes on
                    self.error = f"{type(exc).__name__}: {exc}"
                self.seconds += time.perf_counter() - start
            return func(*args, **kwargs)

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

        def report(self) -> dict:
            """The backends of the model's Conv2d layers, once the pass has run."""
            if self.error is not None:
                return {"error": self.error}
            return {
                "mkldnn_enabled": bool(torch._C._get_mkldnn_enabled()),
                "nnpack_enabled": bool(torch._C._get_nnpack_enabled()),
                "layers": self.layers,
                **{f"batch_{b}": count(self.layers, b) for b in BATCHES},
                "slow2d": any(layer[f"batch_{b}"] == SLOW for layer in self.layers for b in BATCHES),
                "seconds": round(self.seconds, 4),
            }

    return Recorder()


def count(layers: Iterable[dict], batch: int) -> dict:
    """{backend: number of layers} at one batch, most frequent first."""
    return dict(Counter(layer[f"batch_{batch}"] for layer in layers).most_common())


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
