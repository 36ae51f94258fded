# -*- coding: utf-8 -*-
# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The one short form of the service's ``conv_backends`` summary (``GET /v2``), for the
deploy table and the audit report: which backend the deployed models' Conv2d layers run on
at batch 1 and at batch 16, with ``!`` after ``Slow2d`` (the slow direct path).

The built-in self-test is left out: its 1-channel 8x8 convolution is one oneDNN declines by
design, so it is ``Slow2d`` at batch 1 on every host and says nothing about the host."""

from __future__ import annotations

BATCHES = (1, 16)
SLOW = "Slow2d"


def _names(counts):
    return "+".join(name + ("!" if name == SLOW else "") for name in sorted(counts))


def conv_backends_short(summary):
    """'Mkldnn', '1:Slow2d! 16:Mkldnn', 'none' (no deployed model has a Conv2d layer),
    'error' (the service could not follow a model) or '-' (no summary: service not
    answering, or a release from before the service reported it)."""
    if not isinstance(summary, dict) or not isinstance(summary.get("models"), dict):
        return "-"
    deployed = [m for m in summary["models"].values() if not m.get("builtin")]
    if any("error" in m for m in deployed):
        return "error"
    per_batch = []
    for batch in BATCHES:
        counts = set()
        for model in deployed:
            counts.update((model.get("batch_%d" % batch) or {}).keys())
        per_batch.append(counts)
    if not any(per_batch):
        return "none"
    if all(counts == per_batch[0] for counts in per_batch):
        return _names(per_batch[0])
    return " ".join("%d:%s" % (batch, _names(counts) or "-") for batch, counts in zip(BATCHES, per_batch))


def conv_backends_slow2d(summary):
    """The deployed models with a Conv2d layer on Slow2d at batch 1 or 16 (the service's list)."""
    if not isinstance(summary, dict):
        return []
    return list(summary.get("slow2d") or [])


class FilterModule:
    """pytorch_backend conv backend filters."""

    def filters(self):
        return {
            "pytorch_backend_conv_short": conv_backends_short,
            "pytorch_backend_conv_slow2d": conv_backends_slow2d,
        }
