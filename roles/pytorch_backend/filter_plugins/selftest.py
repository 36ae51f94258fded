# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Controller-side reference for the service's built-in ``conv2d-selftest`` model.

The verifier compares what the running service returns with numbers computed
here, in plain Python, without torch: an independent check of the arithmetic,
not a second copy of the same library call.

Model: Conv2d(1 -> 2, kernel 3, stride 1, padding 1, bias), no activation.
All inputs and weights are small integers, so FP32 results are exact.
"""

from __future__ import annotations

WEIGHTS = (
    ((1, 0, -1), (2, 0, -2), (1, 0, -1)),   # Sobel-x
    ((0, 1, 0), (1, -4, 1), (0, 1, 0)),     # Laplacian
)
BIAS = (0.5, -0.25)


def selftest_input(size=8):
    """The documented input, shape [1, 1, size, size]: ((3*i + 5*j) % 11) - 5."""
    size = int(size)
    return [[[[((3 * i + 5 * j) % 11) - 5 for j in range(size)] for i in range(size)]]]


def conv2d_reference(batch):
    """Expected output of conv2d-selftest for a [N, 1, H, W] nested list, flattened row-major."""
    out = []
    for sample in batch:
        image = sample[0]
        height, width = len(image), len(image[0])
        for kernel, bias in zip(WEIGHTS, BIAS):
            for i in range(height):
                for j in range(width):
                    acc = 0.0
                    for di in range(3):
                        for dj in range(3):
                            y, x = i + di - 1, j + dj - 1
                            if 0 <= y < height and 0 <= x < width:
                                acc += kernel[di][dj] * image[y][x]
                    out.append(acc + bias)
    return out


class FilterModule:
    """pytorch_backend self-test filters."""

    def filters(self):
        return {
            "pytorch_backend_selftest_input": selftest_input,
            "pytorch_backend_conv2d_reference": conv2d_reference,
        }
