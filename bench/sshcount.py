#!/usr/bin/env python3
"""A counting stand-in for `ssh`: runs the real one with the same arguments, copies stdin, stdout
and stderr through, and appends one JSON line per invocation to $SSHCOUNT_LOG.

bench/bench-fleet-cost sets it as Ansible's ssh executable (ANSIBLE_SSH_EXECUTABLE) and, with
`-S`, as the program sftp and scp run, so a file transfer is counted by the bytes that really
cross the connection, not by the size of a file named on sftp's command line.

Environment:
  SSHCOUNT_REAL  the program to run (default ssh, found on PATH; tests put `cat` or `sh` here)
  SSHCOUNT_LOG   where the JSON lines go (nothing is logged without it)

A line: {"argv": [...], "via": "ansible"|"sftp"|"scp"|..., "sent": bytes into the program's stdin,
"received": bytes out of its stdout, "stderr": bytes out of its stderr, "rc": ..., "seconds": wall,
"self_cpu": this wrapper's own user+sys seconds, so that the bench can take its cost back out}.
Stdlib only; runs with any Python >= 3.8.
"""
import json
import os
import resource
import subprocess
import sys
import threading
import time

CHUNK = 1 << 16


def _pump(src_fd: int, dst_fd: int, counter: list, close_dst: bool) -> None:
    """Copy until EOF (or the reader went away), adding the bytes to counter[0]."""
    try:
        while True:
            try:
                data = os.read(src_fd, CHUNK)
            except OSError:  # a pty's master side closed: EIO, not EOF
                break
            if not data:
                break
            counter[0] += len(data)
            view = memoryview(data)
            while view:
                try:
                    n = os.write(dst_fd, view)
                except BrokenPipeError:
                    return
                view = view[n:]
    finally:
        if close_dst:
            try:
                os.close(dst_fd)
            except OSError:
                pass


def _via() -> str:
    """Who started us: ansible-playbook's workers run ssh themselves, sftp and scp run it for
    file transfers (through `-S`)."""
    try:
        with open(f"/proc/{os.getppid()}/comm") as f:
            comm = f.read().strip()
    except OSError:
        return "unknown"
    return comm if comm in ("sftp", "scp") else "ansible"


def main(argv: list) -> int:
    real = os.environ.get("SSHCOUNT_REAL", "ssh").split()
    logpath = os.environ.get("SSHCOUNT_LOG")
    started = time.monotonic()
    proc = subprocess.Popen(real + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0)
    sent, received, err = [0], [0], [0]
    pumps = [
        threading.Thread(target=_pump, args=(0, proc.stdin.fileno(), sent, True), daemon=True),
        threading.Thread(target=_pump, args=(proc.stdout.fileno(), 1, received, False), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr.fileno(), 2, err, False), daemon=True),
    ]
    for t in pumps:
        t.start()
    rc = proc.wait()
    # stdout ends when the program does. ssh's ControlPersist master, forked from the first
    # invocation, can keep stderr open for minutes: waiting for its EOF would hang ansible.
    pumps[1].join(timeout=30)
    pumps[2].join(timeout=0.5)
    seconds = time.monotonic() - started
    if logpath:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        line = json.dumps({"argv": argv, "via": _via(), "sent": sent[0], "received": received[0],
                           "stderr": err[0], "rc": rc, "seconds": round(seconds, 4),
                           "self_cpu": round(ru.ru_utime + ru.ru_stime, 4), "pid": os.getpid()})
        # one write of one line with O_APPEND: parallel forks do not interleave
        fd = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    # the stdin pump may still sit in a read on ansible's pty: leave without joining it
    sys.stdout.flush()
    os._exit(main(sys.argv[1:]))
