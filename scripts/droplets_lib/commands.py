"""The subcommands: up, down, restart, status, ssh, console, inventory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from .accel import choose_accel
from .boot import boot, report_failures, wait_ssh
from .config import DEFAULT_CPU, DEFAULT_MEM_MB, DEFAULT_SMP
from .images import DEFAULT_SUITE, ensure_image
from .inventory import write_inventory
from .messages import DropletError, log
from .processes import find_qemu_by_disk, kill_qemu, shutdown
from .specs import normalize_cpu, parse_spec
from .ssh import pick_port, port_free, ssh_argv, ssh_ok
from .state import Droplet, list_droplets, select, state_lock


def cmd_up(args) -> int:
    specs = [parse_spec(s) for s in args.specs]
    names = [s[0] for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DropletError(f"droplet named twice: {', '.join(dup)}", 2)
    if args.port is not None and len(specs) != 1:
        raise DropletError("--port needs exactly one droplet", 2)
    specs = [(n, normalize_cpu(c) if c else None, m, s) for n, c, m, s in specs]
    # each image once, in the order asked (the first one's kernel tells whether KVM works)
    images = {}
    for suite in dict.fromkeys(s or DEFAULT_SUITE for _, _, _, s in specs):
        images[suite] = ensure_image(build=not args.no_build, suite=suite)
    state_dir = args.state_dir
    with state_lock(state_dir):
        existing = {d.name: d for d in list_droplets(state_dir)}
        taken = {int(d.state["port"]) for d in existing.values() if d.state.get("port")}
        to_boot, to_wait = [], []
        # Check everything before booting anything.
        for name, cpu, mem, suite in specs:
            d = existing.get(name) or Droplet(state_dir, name)
            if d.exists and d.disk.exists() and suite and suite != d.state.get("suite", DEFAULT_SUITE):
                raise DropletError(f"{name}'s disk is {d.state.get('suite', DEFAULT_SUITE)}, not {suite}: "
                                   f"`droplets down {name}` first", 2)
            if d.exists and d.alive():
                if cpu and cpu != d.state["cpu"]:
                    raise DropletError(
                        f"{name} runs with CPU {d.state['cpu']}, not {cpu}: use "
                        f"`droplets restart {name} --cpu {cpu}` (or `down` it first)", 2)
                if mem and mem != d.state["mem_mb"]:
                    raise DropletError(f"{name} runs with {d.state['mem_mb']} MiB, not {mem}: use "
                                       f"`droplets restart {name} --mem {mem}`", 2)
        accel, why = choose_accel(state_dir, args.accel, next(iter(images.values()))["kernel"])
        log(f"accelerator: {accel} ({why})")
        for name, cpu, mem, suite in specs:
            paths = images[suite or DEFAULT_SUITE]
            d = existing.get(name) or Droplet(state_dir, name)
            if d.exists and d.alive():
                log(f"{name}: already running with CPU {d.state['cpu']} on port "
                    f"{d.state['port']} (no-op)")
                to_wait.append(d)
                continue
            if d.exists and d.disk.exists():
                log(f"{name}: not running; booting its existing disk")
            else:
                d.dir.mkdir(parents=True, exist_ok=True)
                r = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", paths["image"],
                                    "-F", "raw", str(d.disk)], capture_output=True, text=True)
                if r.returncode != 0:
                    raise DropletError(f"{name}: qemu-img create failed: {r.stderr.strip()}")
                d.state = {"name": name, **paths}
            d.state.update({
                "name": name,
                "cpu": cpu or d.state.get("cpu") or DEFAULT_CPU,
                "mem_mb": mem or d.state.get("mem_mb") or DEFAULT_MEM_MB,
                "smp": d.state.get("smp") or DEFAULT_SMP,
                "accel": accel,
                "append": args.append if args.append is not None else d.state.get("append", ""),
            })
            if args.port is not None:
                if not port_free(args.port):
                    raise DropletError(f"port {args.port} on 127.0.0.1 is in use", 2)
                d.state["port"] = args.port
            else:
                old = d.state.get("port")
                d.state["port"] = old if old and port_free(old) else pick_port(taken)
            taken.add(d.state["port"])
            d.save()
            try:
                boot(d, args.port is not None, taken)
            except BaseException:
                for b in to_boot:  # do not leave half of a failed `up` running
                    kill_qemu(b, grace=3)
                write_inventory(state_dir, args.inventory)
                raise
            to_boot.append(d)
        all_wait = to_boot + to_wait
        log(f"waiting for SSH on {', '.join(d.name for d in all_wait)} (timeout {args.timeout:.0f}s)")
        t0 = time.monotonic()
        failures = wait_ssh(all_wait, args.timeout)
        report_failures(failures, args.keep_failed)
        write_inventory(state_dir, args.inventory)
        log(f"inventory: {args.inventory}")
        if failures:
            return 1
        if to_boot:
            log(f"all up in {time.monotonic() - t0:.1f}s")
    return 0


def cmd_down(args) -> int:
    with state_lock(args.state_dir):
        targets = select(args.state_dir, args.names)
        if not targets:
            log("no droplets")
        for d in targets:
            if args.keep_disk:
                shutdown(d)
            else:
                kill_qemu(d)
            left = find_qemu_by_disk(d.disk)
            if left:
                raise DropletError(f"{d.name}: QEMU {left} still runs")
            if args.keep_disk:
                with contextlib.suppress(FileNotFoundError):
                    d.pidfile.unlink()
                log(f"{d.name}: stopped; disk kept at {d.disk}")
            else:
                shutil.rmtree(d.dir)
                log(f"{d.name}: stopped and removed")
        write_inventory(args.state_dir, args.inventory)
        log(f"inventory: {args.inventory}")
    return 0


def cmd_restart(args) -> int:
    cpu = normalize_cpu(args.cpu) if args.cpu else None
    with state_lock(args.state_dir):
        targets = select(args.state_dir, args.names)
        for d in targets:
            if not d.disk.exists():
                raise DropletError(f"{d.name}: no disk at {d.disk}", 2)
        accel, why = choose_accel(args.state_dir, args.accel, targets[0].state["kernel"])
        log(f"accelerator: {accel} ({why})")
        taken = {int(d.state["port"]) for d in list_droplets(args.state_dir) if d.state.get("port")}
        for d in targets:
            old_cpu = d.state["cpu"]
            shutdown(d)
            d.state["cpu"] = cpu or old_cpu
            if args.mem:
                d.state["mem_mb"] = args.mem
            if args.append is not None:
                d.state["append"] = args.append
            d.state["accel"] = accel
            if not port_free(d.state["port"]):
                d.state["port"] = pick_port(taken)
            taken.add(d.state["port"])
            d.save()
            log(f"{d.name}: booting the same disk with CPU {d.state['cpu']} (was {old_cpu})")
            boot(d, False, taken)
        failures = wait_ssh(targets, args.timeout)
        report_failures(failures, args.keep_failed)
        write_inventory(args.state_dir, args.inventory)
        log(f"inventory: {args.inventory}")
    return 1 if failures else 0


def cmd_status(args) -> int:
    rows = []
    droplets = list_droplets(args.state_dir)
    ok = {}

    def check(d):
        ok[d.name] = bool(d.pid()) and ssh_ok(d.state["port"], connect_timeout=3)

    threads = [threading.Thread(target=check, args=(d,)) for d in droplets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in droplets:
        pid = d.pid()
        rows.append({"name": d.name, "suite": d.state.get("suite", DEFAULT_SUITE), "cpu": d.state.get("cpu"),
                     "mem_mb": d.state.get("mem_mb"),
                     "accel": d.state.get("accel"), "port": d.state.get("port"), "pid": pid,
                     "alive": pid is not None, "ssh_ok": ok.get(d.name, False),
                     "disk": str(d.disk)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no droplets (state dir {args.state_dir})")
        return 0
    cols = ["name", "suite", "cpu", "mem_mb", "accel", "port", "pid", "alive", "ssh_ok"]
    table = [cols] + [["-" if r[c] is None else ("yes" if r[c] is True else "no" if r[c] is False
                                                 else str(r[c])) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def cmd_ssh(args) -> int:
    d = select(args.state_dir, [args.name])[0]
    if not d.alive():
        raise DropletError(f"{d.name} is not running")
    interactive = not args.command and sys.stdin.isatty()
    argv = ssh_argv(d.state["port"], tty=interactive) + args.command
    sys.stdout.flush()
    os.execvp(argv[0], argv)
    return 127


def cmd_console(args) -> int:
    d = select(args.state_dir, [args.name])[0]
    print(d.console_tail(args.lines))
    return 0


def cmd_inventory(args) -> int:
    with state_lock(args.state_dir):
        hosts = write_inventory(args.state_dir, args.inventory)
    if args.print:
        print(args.inventory.read_text(), end="")
    else:
        print(f"{args.inventory}: {len(hosts)} droplet(s)")
    return 0
