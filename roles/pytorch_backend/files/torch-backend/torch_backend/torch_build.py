"""What a venv holds: a CPU build of torch, and which distributions.

PyPI's default Linux torch is the CUDA build (gigabytes of NVIDIA libraries a CPU
droplet never uses); an index or wheelhouse that serves it instead of the CPU build
installs it without complaint. The role runs ``require_cpu`` in each new venv and
refuses the release when it fails, then ``record`` writes what was installed into
the venv, so a release directory says exactly what its environment is.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata

# torch.version names each GPU runtime a build was made for; all are None in a CPU build.
GPU_RUNTIMES = ("cuda", "hip", "xpu")


def gpu_runtimes(version) -> dict:
    """The GPU runtimes a torch build names, e.g. {"cuda": "12.8"}; empty for a CPU build."""
    return {name: str(value) for name in GPU_RUNTIMES
            if (value := getattr(version, name, None))}


def require_cpu() -> None:
    """Exit with a message naming the build unless this interpreter's torch is a CPU build."""
    import torch

    found = gpu_runtimes(torch.version)
    if found:
        runtimes = ", ".join(f"{name} {value}" for name, value in sorted(found.items()))
        raise SystemExit(
            f"torch {torch.__version__} in {sys.prefix} is a GPU build ({runtimes}), not a CPU "
            f"build; install torch's CPU wheel: in index mode pytorch_backend_torch_index_url "
            f"https://download.pytorch.org/whl/cpu, in wheelhouse mode a +cpu wheel")


def installed() -> dict:
    """Every distribution this interpreter sees, name -> version, sorted by name."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(name, dist.version)
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def record(path: str) -> None:
    """Write the interpreter's version and its distributions to `path` as JSON (by rename)."""
    text = json.dumps({"python": platform.python_version(), "distributions": installed()}, indent=2) + "\n"
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


if __name__ == "__main__":
    require_cpu()
