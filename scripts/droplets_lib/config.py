"""Where things are and the defaults of a droplet, shared by the modules and the command line."""

from __future__ import annotations

import os
from pathlib import Path

# the checkout: scripts/droplets_lib/config.py is three levels below it
ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_STATE_DIR = ROOT / ".cache" / "droplets"
DEFAULT_INVENTORY = ROOT / "inventories" / "local" / "hosts.yml"
DEFAULT_CPU = "Haswell"
DEFAULT_MEM_MB = 3072
DEFAULT_SMP = 2
DEFAULT_TIMEOUT = 300.0
# what a guest kernel prints when it gives up: the KVM probe expects it, the SSH wait stops on it
PANIC_MARK = "Kernel panic - not syncing"


def qemu_binary() -> str:
    return os.environ.get("DROPLETS_QEMU", "qemu-system-x86_64")
