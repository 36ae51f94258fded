"""The built-in ``conv2d-selftest`` model.

Exact definition (the Ansible verifier recomputes its output independently,
in plain Python on the controller: roles/pytorch_backend/filter_plugins/selftest.py,
the one reference, which the tests use too; so this must never change):

* input ``input``  FP32, shape [-1, 1, 8, 8]
* output ``output`` FP32, shape [-1, 2, 8, 8]
* ``torch.nn.Conv2d(1, 2, kernel_size=3, stride=1, padding=1, bias=True)``
  with
  weight[0, 0] = [[1, 0, -1], [2, 0, -2], [1, 0, -1]]   (Sobel, x direction)
  weight[1, 0] = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]     (Laplacian)
  bias = [0.5, -0.25]
  no activation; eval mode; no grad.
* documented input: x[0, 0, i, j] = ((3*i + 5*j) % 11) - 5 for i, j in 0..7

PyTorch's Conv2d is a cross-correlation (the kernel is not flipped) with zero
padding, so

    out[b, o, i, j] = bias[o] + sum_{di, dj in 0..2} w[o][di][dj] * x[b, 0, i+di-1, j+dj-1]

with out-of-range x taken as 0. For the documented (integer) input every
product and partial sum is a small integer, so the float32 result is exact:
outputs are integers plus 0.5 (channel 0) or minus 0.25 (channel 1).

Why this shape: a batch-1 3x3 convolution on a tiny single-channel image is
one that oneDNN declines, so torch asks NNPACK first; on a CPU where NNPACK
cannot initialize that is exactly the call that prints the warning.

Nothing here imports torch at module level (build_model does).
"""

from __future__ import annotations

from . import model_rules

MODEL_NAME = model_rules.SELFTEST_MODEL   # reserved there: no other model may have it
INPUT_NAME = "input"
OUTPUT_NAME = "output"
INPUT_SHAPE = [-1, 1, 8, 8]
OUTPUT_SHAPE = [-1, 2, 8, 8]

WEIGHTS = (
    ((1, 0, -1), (2, 0, -2), (1, 0, -1)),
    ((0, 1, 0), (1, -4, 1), (0, 1, 0)),
)
BIAS = (0.5, -0.25)


def build_model():
    """The model as TorchScript (the same platform as file-loaded models)."""
    import torch

    conv = torch.nn.Conv2d(1, 2, kernel_size=3, stride=1, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(WEIGHTS, dtype=torch.float32).unsqueeze(1))
        conv.bias.copy_(torch.tensor(BIAS, dtype=torch.float32))
    conv.eval()
    for p in conv.parameters():
        p.requires_grad_(False)
    return torch.jit.script(conv)


def metadata() -> dict:
    return {
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": list(INPUT_SHAPE)}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(OUTPUT_SHAPE)}],
    }
