"""Which torch build a venv holds: the service is made for CPU hosts.

PyPI's default Linux torch is the CUDA build (gigabytes of NVIDIA libraries a CPU
droplet never uses); an index or wheelhouse that serves it instead of the CPU build
installs it without complaint. The role runs ``require_cpu`` in each new venv and
refuses the release when it fails.
"""

from __future__ import annotations

import sys

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


if __name__ == "__main__":
    require_cpu()
