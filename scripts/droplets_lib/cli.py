"""Local emulated "droplets": Debian 12 or 13 QEMU guests that Ansible reaches over SSH on 127.0.0.1.

Each droplet boots the image of scripts/build-image through its own qcow2 copy-on-write overlay,
with a chosen QEMU CPU model (a "hardware migration" is a restart with another model), and is
listed in an Ansible inventory (group `droplets`). Only loopback is used: QEMU user networking with
a host port forwarded from 127.0.0.1 to the guest's port 22.

  scripts/droplets up NAME[:CPU[:MEM_MB[:SUITE]]] ...   boot (in parallel) and wait until SSH works;
                                                SUITE is the image: bookworm (default) or trixie
  scripts/droplets down [NAME ...]              stop and forget (all when no name)
  scripts/droplets restart NAME --cpu MODEL     clean shutdown, boot the same disk with another CPU
  scripts/droplets status [--json]              table of droplets
  scripts/droplets ssh NAME [CMD ...]           SSH into a droplet (interactive or a command)
  scripts/droplets console NAME [-n LINES]      tail of the guest's serial console log
  scripts/droplets inventory [--print]          rewrite the inventory from the state

State (default .cache/droplets, or --state-dir / $DROPLETS_STATE_DIR):
  .lock                   fcntl lock: one mutating invocation at a time
  accel                   JSON: cached KVM-or-TCG verdict, keyed by guest kernel + QEMU + host kernel
  NAME/state.json         cpu, mem, port, accel, image paths, kernel args
  NAME/disk.qcow2         overlay on the image's disk.raw (removed by `down` unless --keep-disk)
  NAME/qemu.pid           QEMU's pidfile       NAME/console.log   guest serial console
  NAME/qemu.log           QEMU's own stderr    NAME/qmp.sock      QMP socket (ACPI power button)
Inventory (default inventories/local/hosts.yml, or --inventory / $DROPLETS_INVENTORY).
Stdlib only; runs with any Python >= 3.8.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .boot import GUEST_KERNEL_ARGS
from .commands import cmd_console, cmd_down, cmd_inventory, cmd_restart, cmd_ssh, cmd_status, cmd_up
from .config import DEFAULT_CPU, DEFAULT_INVENTORY, DEFAULT_MEM_MB, DEFAULT_STATE_DIR, DEFAULT_TIMEOUT
from .messages import DropletError


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options (also accepted before the subcommand)")
    g.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS,
                   help="state directory (env DROPLETS_STATE_DIR; default .cache/droplets)")
    g.add_argument("--inventory", type=Path, default=argparse.SUPPRESS,
                   help="inventory file to write (env DROPLETS_INVENTORY; "
                        "default inventories/local/hosts.yml)")

    boot_opts = argparse.ArgumentParser(add_help=False)
    b = boot_opts.add_argument_group("boot options")
    b.add_argument("--accel", choices=["auto", "kvm", "tcg"], default=None,
                   help="force the accelerator (env DROPLETS_ACCEL); default: probe once")
    b.add_argument("--timeout", type=float,
                   default=float(os.environ.get("DROPLETS_TIMEOUT", DEFAULT_TIMEOUT)),
                   help="seconds to wait for SSH (env DROPLETS_TIMEOUT; default %(default)s)")
    b.add_argument("--append", default=None, metavar="KERNEL_ARGS",
                   help="extra kernel command-line arguments (kept for later boots), after the "
                        f"default {GUEST_KERNEL_ARGS!r}")
    b.add_argument("--keep-failed", action="store_true",
                   help="leave a guest that did not answer running (default: stop it)")

    p = argparse.ArgumentParser(prog="droplets", description=__doc__.split("\n\n")[0],
                                parents=[common],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("up", parents=[common, boot_opts],
                       help="boot droplets and wait for SSH (idempotent)")
    s.add_argument("specs", nargs="+", metavar="NAME[:CPU[:MEM_MB]]",
                   help=f"e.g. nehalem:Nehalem or big::8192 (defaults {DEFAULT_CPU}, "
                        f"{DEFAULT_MEM_MB} MiB)")
    s.add_argument("--port", type=int, default=None, help="host port for SSH (one droplet only)")
    s.add_argument("--no-build", action="store_true",
                   help="do not run scripts/build-image when an image exists")
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("down", parents=[common], help="stop droplets (all when none named)")
    s.add_argument("names", nargs="*", metavar="NAME")
    s.add_argument("--keep-disk", action="store_true",
                   help="clean shutdown; keep the overlay and state for a later `up`")
    s.set_defaults(func=cmd_down)

    s = sub.add_parser("restart", parents=[common, boot_opts],
                       help="clean shutdown, boot the same disk (with another CPU model)")
    s.add_argument("names", nargs="+", metavar="NAME")
    s.add_argument("--cpu", help="new QEMU CPU model (default: unchanged)")
    s.add_argument("--mem", type=int, help="new memory size in MiB")
    s.set_defaults(func=cmd_restart)

    s = sub.add_parser("status", parents=[common], help="table of droplets")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("ssh", parents=[common], help="ssh into a droplet")
    s.add_argument("name", metavar="NAME")
    s.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    s.set_defaults(func=cmd_ssh)

    s = sub.add_parser("console", parents=[common], help="tail of a droplet's serial console")
    s.add_argument("name", metavar="NAME")
    s.add_argument("-n", "--lines", type=int, default=40)
    s.set_defaults(func=cmd_console)

    s = sub.add_parser("inventory", parents=[common], help="rewrite the inventory from the state")
    s.add_argument("--print", action="store_true", help="print the inventory")
    s.set_defaults(func=cmd_inventory)
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if not hasattr(args, "state_dir"):
        args.state_dir = Path(os.environ.get("DROPLETS_STATE_DIR") or DEFAULT_STATE_DIR)
    if not hasattr(args, "inventory"):
        args.inventory = Path(os.environ.get("DROPLETS_INVENTORY") or DEFAULT_INVENTORY)
    args.state_dir = args.state_dir.absolute()
    args.inventory = args.inventory.absolute()
    if getattr(args, "timeout", 1) <= 0:
        raise DropletError("--timeout must be positive", 2)
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        return args.func(args)
    except DropletError as e:
        print(f"droplets: error: {e}", file=sys.stderr, flush=True)
        return e.code
    except KeyboardInterrupt:
        print("droplets: interrupted", file=sys.stderr)
        return 130
