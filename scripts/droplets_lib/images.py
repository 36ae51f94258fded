"""The guest images scripts/build-image makes, one per Debian suite, that every droplet boots
through an overlay of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .config import ROOT
from .messages import DropletError, log

BUILD_IMAGE = ROOT / "scripts" / "build-image"
SUITES = ("bookworm", "trixie")
DEFAULT_SUITE = "bookworm"


def image_dir(suite: str = DEFAULT_SUITE) -> Path:
    """Where scripts/build-image --suite SUITE puts its builds."""
    return Path(os.environ.get("DROPLETS_IMAGE_DIR", ROOT / ".cache" / "image")) / suite


def ensure_image(build: bool, suite: str = DEFAULT_SUITE) -> dict:
    """Paths of the current image build of SUITE (building it first when asked or missing)."""
    current = image_dir(suite) / "current"
    ok = all((current / f).exists() for f in ("disk.raw", "vmlinuz", "initrd.img", "stamp"))
    if build or not ok:
        if not ok:
            log(f"image missing in {image_dir(suite)}: running scripts/build-image --suite {suite}")
        r = subprocess.run([str(BUILD_IMAGE), "--suite", suite], stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise DropletError(f"scripts/build-image --suite {suite} failed (exit {r.returncode})")
    real = current.resolve()
    if not (real / "disk.raw").exists():
        raise DropletError(f"no image in {current}: run scripts/build-image --suite {suite}")
    return {"image": str(real / "disk.raw"), "kernel": str(real / "vmlinuz"),
            "initrd": str(real / "initrd.img"), "suite": suite}
