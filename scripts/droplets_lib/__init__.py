"""The code of scripts/droplets: local emulated droplets, QEMU guests that Ansible reaches over SSH
on 127.0.0.1. The usage is cli.py's docstring, what `scripts/droplets --help` prints.

Every public name the command had when it was one file is imported here: scripts/droplets imports
them all, and tests that load that file as a module call them through it.
Stdlib only; runs with any Python >= 3.8.
"""

from .accel import choose_accel, file_digest, probe_kvm, qemu_version
from .boot import GUEST_KERNEL_ARGS, boot, qemu_argv, report_failures, wait_ssh
from .cli import build_parser, main, parse_args
from .commands import cmd_console, cmd_down, cmd_inventory, cmd_restart, cmd_ssh, cmd_status, cmd_up
from .config import (DEFAULT_CPU, DEFAULT_INVENTORY, DEFAULT_MEM_MB, DEFAULT_SMP, DEFAULT_STATE_DIR,
                     DEFAULT_TIMEOUT, PANIC_MARK, ROOT, qemu_binary)
from .images import BUILD_IMAGE, DEFAULT_SUITE, SUITES, ensure_image, image_dir
from .inventory import host_vars, render_inventory, write_inventory, yaml_str
from .messages import DropletError, log
from .processes import (find_qemu_by_disk, is_our_qemu, kill_qemu, proc_cmdline, qmp_powerdown, shutdown,
                        wait_gone)
from .specs import NAME_RE, cpu_models, normalize_cpu, parse_spec
from .ssh import SSH_COMMON_ARGS, pick_port, port_free, ssh_argv, ssh_key, ssh_ok, ssh_try
from .state import Droplet, atomic_write, list_droplets, select, state_lock, tail
