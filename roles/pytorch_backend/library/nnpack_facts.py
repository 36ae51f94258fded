#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026, pytorch_backend role contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nnpack_facts
short_description: Find out whether PyTorch's NNPACK can initialize on a host, as facts
description:
  - Runs one short probe with the Python interpreter of the PyTorch service (normally its virtualenv python)
    in a child process. The child gathers CPU evidence (CPUID executed through C(ctypes) on x86-64, with
    C(/proc/cpuinfo) and C(/sys/devices/system/cpu/cpu0/cache) as fallback), imports C(torch) and calls
    C(torch.backends.nnpack.is_available) exactly once. The module captures the child's standard error, so the
    C(Could not initialize NNPACK! Reason ...) warning that PyTorch prints on unsupported hardware is parsed,
    never leaked.
  - The module itself never imports C(torch); it only needs the Python standard library.
  - The CPU evidence is always taken inside the probed process, so it describes the CPU that interpreter really
    runs on, also under an emulating O(wrapper) such as C(qemu-x86_64-static -cpu Nehalem), where
    C(/proc/cpuinfo) would show the host's CPU.
  - When the interpreter is missing, cannot import C(torch), crashes, hangs or prints garbage, the module still
    returns facts (status V(torch_missing) or V(probe_failed)) with CPU evidence and a prediction made from it;
    the play is never failed for probe trouble, only for invalid arguments.
  - The module changes nothing, so it runs fully in check mode.
version_added: "1.0.0"
author:
  - pytorch_backend role maintainers (@pytorch-backend)
options:
  python:
    description:
      - Path of the Python interpreter to probe with, normally the service's virtualenv python,
        for example C(/opt/app/venv/bin/python).
      - A bare name is looked up in E(PATH).
    type: path
    default: /usr/bin/python3
  timeout:
    description:
      - Seconds the probe may take before it is killed (with its whole process group) and reported as
        V(probe_failed). Must be a positive integer.
      - Natively the probe takes about as long as C(import torch) (one to two seconds); under full-system or
        user-mode CPU emulation it takes 10 to 40 seconds, hence the generous default.
      - When the probe produced no CPU evidence, one more evidence-only child (no C(torch) import) is run with
        at most O(timeout) or 60 seconds, whichever is smaller.
    type: int
    default: 180
  wrapper:
    description:
      - Command prefix placed before the interpreter, for example C([qemu-x86_64-static, -cpu, Nehalem])
        to probe as if on another CPU model. Used by tests and for emulation.
      - The first element is looked up in E(PATH) when it is not a path.
    type: list
    elements: str
    default: []
  environment:
    description:
      - Extra environment variables for the probe child, for example the C(PYTHONPATH) or C(LD_LIBRARY_PATH)
        that the service itself runs with.
      - C(PYTHON*) variables of the Ansible process are not passed on to the probe unless set here, so that the
        probe sees the interpreter's own C(sys.path). C(LC_ALL=C) and C(TORCH_CPP_LOG_LEVEL=WARNING) are always
        forced so that the NNPACK warning is printed and parseable.
    type: dict
    default: {}
extends_documentation_fragment:
  - action_common_attributes
  - action_common_attributes.facts
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: posix
notes:
  - On x86-64, NNPACK initializes only when the CPU has AVX2 and FMA3 with the OS enabling the YMM state, and
    when the cpuinfo library finds the L1, L2 and L3 cache sizes in the CPUID cache leaves (leaf 4 on Intel and
    other non-AMD vendors, leaf 0x8000001D). On aarch64 it always initializes unless cpuinfo itself fails.
    C(nnpack.predicted_available) applies these rules to the evidence; C(available) is PyTorch's own answer.
  - "PyTorch's warning C(Could not initialize NNPACK! Reason: Out of memory.) means that cpuinfo could not
    initialize (for example an unreadable C(/proc/cpuinfo)); the status is then V(cpuinfo_failed)."
  - The probe's CPU evidence, the prediction and the fingerprint are computed the same way on every host,
    so facts of many hosts can be compared and cached by C(nnpack.fingerprint).
requirements:
  - Python 3.8 or later on the target; C(torch) only in the probed interpreter.
  - C(timeout) from coreutils is used when present; otherwise a small Python stand-in enforces the timeout.
seealso:
  - name: PyTorch NNPACK backend flags
    description: C(torch.backends.nnpack.set_flags) with C(False) turns NNPACK off at run time without the warning.
    link: https://pytorch.org/docs/stable/backends.html
"""

EXAMPLES = r"""
- name: Probe NNPACK with the service's virtualenv
  nnpack_facts:
    python: /opt/inference/venv/bin/python

- name: Disable NNPACK in the service where it cannot initialize
  ansible.builtin.set_fact:
    pytorch_backend_disable_nnpack: "{{ ansible_facts['nnpack']['available'] is false }}"

- name: Tell the operator why
  ansible.builtin.debug:
    msg: "{{ ansible_facts['nnpack']['status'] }}: {{ ansible_facts['nnpack']['reason'] }}"

- name: Probe as if on a Nehalem CPU (user-mode emulation; slow)
  nnpack_facts:
    python: /opt/inference/venv/bin/python
    wrapper: [qemu-x86_64-static, -cpu, Nehalem]
    timeout: 300

- name: Probe with the environment the service runs with
  nnpack_facts:
    python: /opt/inference/venv/bin/python
    environment:
      PYTHONPATH: /opt/inference/src
"""

RETURN = r"""
ansible_facts:
  description: Facts added under C(nnpack).
  returned: always
  type: complex
  contains:
    nnpack:
      description: Result of the NNPACK probe and the CPU evidence behind it.
      returned: always
      type: complex
      contains:
        available:
          description:
            - PyTorch's own answer, C(torch.backends.nnpack.is_available).
            - V(null) when it could not be decided (torch missing, probe failed).
          type: bool
          returned: always
          sample: false
        status:
          description:
            - V(supported) NNPACK initializes.
            - V(unsupported_hardware) NNPACK refused the CPU (reason C(Unsupported hardware.)). Also used, with an
              explaining C(reason), when this torch build has no NNPACK at all (it then reports C(false)
              without any warning).
            - V(cpuinfo_failed) the cpuinfo library could not initialize (reason C(Out of memory.)).
            - V(torch_missing) the interpreter runs but cannot import C(torch).
            - V(probe_failed) the interpreter or wrapper is missing, the probe crashed, was killed by a signal,
              timed out, printed no readable result, C(import torch) raised, or PyTorch answered C(false) with an
              unrecognised NNPACK reason (then C(available) is V(false)).
          type: str
          returned: always
          choices: [supported, unsupported_hardware, cpuinfo_failed, torch_missing, probe_failed]
          sample: unsupported_hardware
        reason:
          description: One sentence a person can act on, with the exact NNPACK message when one was printed.
          type: str
          returned: always
          sample: >-
            Could not initialize NNPACK! Reason: Unsupported hardware. (CPU Intel Core i7 9xx (Nehalem Class Core i7)
            has no AVX2 and no FMA3; NNPACK on x86-64 needs AVX2, FMA3 and enumerated L1/L2/L3 caches), so
            PyTorch 2.13.0+cpu prints this warning on every convolution that asks: turn NNPACK off in the service
            at start-up with torch.backends.nnpack.set_flags(False), or give the machine a CPU model with these
            features.
        nnpack_message:
          description: The exact warning line PyTorch printed on standard error, or V(null).
          type: str
          returned: always
          sample: "[W1126 02:16:30.259086225 NNPACK.cpp:56] Could not initialize NNPACK! Reason: Unsupported hardware."
        predicted_available:
          description: Whether NNPACK should initialize, judged from the CPU evidence alone (V(null) when unknown).
          type: bool
          returned: always
          sample: false
        prediction_method:
          description: How C(predicted_available) was decided.
          type: str
          returned: always
          sample: "x86-64: avx2+fma+L1/L2/L3 cache enumeration (CPUID, CPUID cache leaves)"
        cpu_vendor:
          description: CPU vendor string (CPUID leaf 0 or C(vendor_id)).
          type: str
          returned: always
          sample: GenuineIntel
        cpu_model:
          description: CPU model name (CPUID brand string or C(model name)).
          type: str
          returned: always
          sample: Intel Core i7 9xx (Nehalem Class Core i7)
        cpu_family:
          description: CPU family number (x86), or V(null).
          type: int
          returned: always
          sample: 6
        cpu_model_number:
          description: CPU model number (x86), or V(null).
          type: int
          returned: always
          sample: 26
        cpu_stepping:
          description: CPU stepping (x86), or V(null).
          type: int
          returned: always
          sample: 3
        architecture:
          description: Machine architecture as the probed interpreter sees it (C(uname -m)).
          type: str
          returned: always
          sample: x86_64
        cpu_flags:
          description:
            - The NNPACK-relevant features. On x86-64 C(avx), C(avx2), C(fma) and C(avx512f) count only when the OS
              enables the register state (XGETBV). C(asimd) is only meaningful on aarch64.
          type: dict
          returned: always
          sample: {"avx": false, "avx2": false, "fma": false, "avx512f": false, "asimd": false}
        os_ymm_enabled:
          description: Whether the OS enables the AVX (YMM) register state, from XGETBV; V(null) without CPUID.
          type: bool
          returned: always
          sample: true
        os_disabled_flags:
          description:
            - Features present in CPUID but unusable because the OS does not enable their register state
              (V(null) without CPUID).
          type: list
          elements: str
          returned: always
          sample: []
        cpuid_error:
          description: Why CPUID could not be executed in the probe (the evidence then comes from procfs/sysfs).
          type: str
          returned: when CPUID failed
          sample: "PermissionError: [Errno 13] Permission denied"
        cache_enumerated:
          description:
            - Whether L1 data, L2 and L3 cache sizes are all enumerated (CPUID cache leaves, or sysfs as fallback).
            - V(null) when it could not be determined.
          type: bool
          returned: always
          sample: true
        cache_sizes:
          description: Cache sizes in bytes by level (C(L1d), C(L2), C(L3)); a level is V(null) when not enumerated.
          type: dict
          returned: always
          sample: {"L1d": 32768, "L2": 4194304, "L3": 16777216}
        proc_cpuinfo_readable:
          description: Whether C(/proc/cpuinfo) could be read by the probed process (cpuinfo needs it on Linux).
          type: bool
          returned: always
          sample: true
        evidence_source:
          description:
            - Where the CPU evidence came from, for example C(cpuid) (executed in the probed process),
              C(procfs+sysfs), or C(module-procfs+sysfs) (read by the module's own Python when no child could
              provide evidence; under a O(wrapper) this shows the host's CPU).
          type: str
          returned: always
          sample: cpuid
        evidence_interpreter:
          description: Interpreter whose process gathered the evidence (differs from O(python) after a failed probe).
          type: str
          returned: always
          sample: /opt/inference/venv/bin/python
        fingerprint:
          description:
            - Short stable hex id of the CPU (vendor, model name, family/model/stepping, architecture, the
              NNPACK-relevant flags and whether caches are enumerated; never clock speed or core counts).
          type: str
          returned: always
          sample: 3f1c0a9b7e2d4c51
        fingerprint_source:
          description: The human-readable string the fingerprint is hashed from.
          type: str
          returned: always
          sample: >-
            GenuineIntel | Intel Core i7 9xx (Nehalem Class Core i7) | x86_64 family=6 model=26 stepping=3 |
            avx=no avx2=no fma=no avx512f=no asimd=no | caches=L1/L2/L3
        torch_version:
          description: C(torch.__version__), or V(null).
          type: str
          returned: always
          sample: 2.13.0+cpu
        torch_cpu_capability:
          description: C(torch.backends.cpu.get_cpu_capability) (C(DEFAULT), C(AVX2), C(AVX512), ...), or V(null).
          type: str
          returned: always
          sample: DEFAULT
        mkldnn_available:
          description: C(torch.backends.mkldnn.is_available), or V(null).
          type: bool
          returned: always
          sample: true
        torch_import_seconds:
          description: Time C(import torch) took inside the probe, or V(null).
          type: float
          returned: always
          sample: 1.21
        python:
          description: The interpreter probed with (O(python) as given).
          type: str
          returned: always
          sample: /opt/inference/venv/bin/python
        python_version:
          description: Version of the probed interpreter, or V(null) when it never started.
          type: str
          returned: always
          sample: 3.11.2
        evidence_python_version:
          description: Version of the interpreter that gathered the evidence when it was not the probed one.
          type: str
          returned: when the probe gave no evidence
          sample: 3.11.2
        wrapper:
          description: The O(wrapper) command prefix used.
          type: list
          elements: str
          returned: always
          sample: [qemu-x86_64-static, -cpu, Nehalem]
        duration:
          description: Wall time of the probe in seconds.
          type: float
          returned: always
          sample: 1.42
        cpu_count:
          description: Logical CPUs seen by the probed process (informational).
          type: int
          returned: always
          sample: 2
        probe_rc:
          description: Exit status of the probe (negative for a signal), or V(null) when it did not run or timed out.
          type: int
          returned: always
          sample: 0
        probe_stderr_tail:
          description: Last lines of the probe's standard error when the status is V(probe_failed), else V(null).
          type: str
          returned: always
          sample: null
"""

import hashlib
import json
import os
import re
import signal
import sys
import time

from ansible.module_utils.basic import AnsibleModule

# The probe child. It runs as `PYTHON -c _PROBE_SCRIPT [--evidence-only] [--no-cpuid]` and prints
# JSON records, each on one line after _MARK, as it goes: "procfs" (procfs/sysfs evidence), "evidence"
# (plus CPUID), "torch" (torch imported) and finally "done". Every record repeats everything known so
# far, so the last record wins, and a crash is located by the stage of the last record. It imports
# nothing heavy but torch and asks NNPACK exactly once. The module exec()s this same source (without
# running main) to read procfs/sysfs in-process when no child can give evidence.
_MARK = "@@NNPACK_FACTS@@ "

_PROBE_SCRIPT = r'''
import json, os, platform, sys, time
MARK = "@@NNPACK_FACTS@@ "

def emit(rec):
    sys.stdout.write(MARK + json.dumps(rec, sort_keys=True) + "\n")
    sys.stdout.flush()

def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except Exception:
        return None

def _int(text, base=10):
    try:
        return int(str(text).strip(), base)
    except Exception:
        return None

def _size(text):
    text = (text or "").strip().upper()
    mult = 1
    for suffix, m in (("K", 1024), ("M", 1024 ** 2), ("G", 1024 ** 3)):
        if text.endswith(suffix):
            text, mult = text[:-1], m
            break
    n = _int(text)
    return n * mult if n else None

def _clean(s):
    return " ".join(str(s).split()) if s else None

def sysfs_caches():
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        names = sorted(n for n in os.listdir(base) if n.startswith("index"))
    except Exception:
        return None
    sizes = {"L1d": None, "L2": None, "L3": None}
    for n in names:
        level = _int(_read(base + "/" + n + "/level"))
        kind = (_read(base + "/" + n + "/type") or "").strip()
        size = _size(_read(base + "/" + n + "/size"))
        if kind == "Instruction" or not size:
            continue
        key = {1: "L1d", 2: "L2", 3: "L3"}.get(level)
        if key:
            sizes[key] = size
    return sizes

def procfs_evidence(rec):
    machine = platform.machine() or ""
    rec["architecture"] = machine
    rec["cpu_count"] = os.cpu_count()
    rec["python_version"] = platform.python_version()
    rec["python_executable"] = sys.executable
    text = _read("/proc/cpuinfo")
    rec["proc_cpuinfo_readable"] = text is not None
    info = {}
    for line in (text or "").splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip().lower(), value.strip())
    words = set((info.get("flags") or info.get("features") or "").split())
    rec["cpu_vendor"] = _clean(info.get("vendor_id")) or (
        "CPU implementer " + info["cpu implementer"] if "cpu implementer" in info else None)
    rec["cpu_model"] = _clean(info.get("model name")) or (
        "CPU part " + info["cpu part"] if "cpu part" in info else None)
    rec["cpu_family"] = _int(info.get("cpu family"))
    rec["cpu_model_number"] = _int(info.get("model"))
    rec["cpu_stepping"] = _int(info.get("stepping"))
    arm = machine in ("aarch64", "arm64")
    rec["cpu_flags"] = {
        "avx": "avx" in words, "avx2": "avx2" in words, "fma": "fma" in words,
        "avx512f": "avx512f" in words, "asimd": arm and ("asimd" in words or "neon" in words),
    } if text is not None else None
    rec["os_ymm_enabled"] = None
    rec["os_disabled_flags"] = None
    sizes = sysfs_caches()
    rec["cache_sizes"] = sizes
    rec["cache_enumerated"] = None if sizes is None else all(sizes.values())
    rec["evidence_source"] = "procfs+sysfs"
    return rec

# x86-64 System V machine code, executed from an anonymous executable page:
#   cpuid(leaf=edi, subleaf=esi, out=rdx): push rbx; mov eax,edi; mov ecx,esi; mov r8,rdx; cpuid;
#     mov [r8],eax; mov [r8+4],ebx; mov [r8+8],ecx; mov [r8+12],edx; pop rbx; ret
#   xgetbv(ecx=edi) -> edx:eax: mov ecx,edi; xgetbv; shl rdx,32; or rax,rdx; ret
CPUID_CODE = bytes([0x53, 0x89, 0xF8, 0x89, 0xF1, 0x49, 0x89, 0xD0, 0x0F, 0xA2,
                    0x41, 0x89, 0x00, 0x41, 0x89, 0x58, 0x04, 0x41, 0x89, 0x48, 0x08,
                    0x41, 0x89, 0x50, 0x0C, 0x5B, 0xC3])
XGETBV_CODE = bytes([0x89, 0xF9, 0x0F, 0x01, 0xD0, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0xC3])
_keep = []

def cpuid_evidence(rec):
    import ctypes, mmap, struct
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(CPUID_CODE)
    page.seek(64)
    page.write(XGETBV_CODE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(page))
    _keep.append(page)
    raw = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)(base)
    xgetbv = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32)(base + 64)
    _keep.extend([raw, xgetbv])
    out = (ctypes.c_uint32 * 4)()

    def cpuid(leaf, sub=0):
        raw(leaf, sub, ctypes.addressof(out))
        return tuple(out)

    zero = (0, 0, 0, 0)
    l0 = cpuid(0)
    max_base = l0[0]
    vendor = struct.pack("<III", l0[1], l0[3], l0[2]).decode("latin-1").strip("\0 ")
    max_ext = cpuid(0x80000000)[0]
    if max_ext < 0x80000000:
        max_ext = 0
    l1 = cpuid(1) if max_base >= 1 else zero
    l7 = cpuid(7, 0) if max_base >= 7 else zero
    osxsave = bool(l1[2] >> 27 & 1)
    xcr0 = xgetbv(0) if osxsave else 0
    ymm = osxsave and (xcr0 & 0x6) == 0x6
    zmm = ymm and (xcr0 & 0xE0) == 0xE0
    brand = None
    if max_ext >= 0x80000004:
        blob = b"".join(struct.pack("<4I", *cpuid(leaf)) for leaf in (0x80000002, 0x80000003, 0x80000004))
        brand = _clean(blob.split(b"\0")[0].decode("latin-1"))
    sig = l1[0]
    family = (sig >> 8) & 0xF
    model = (sig >> 4) & 0xF
    if family == 0xF:
        family += (sig >> 20) & 0xFF
    if family >= 6:
        model += ((sig >> 16) & 0xF) << 4
    # Cache hierarchy the way pytorch/cpuinfo (hence NNPACK) finds it: deterministic cache
    # parameters (leaf 4) for non-AMD vendors, cache properties (leaf 0x8000001D) where present.
    sizes = {"L1d": None, "L2": None, "L3": None}

    def walk(leaf):
        for sub in range(16):
            a, b, c, d = cpuid(leaf, sub)
            kind = a & 0x1F
            if kind == 0:
                break
            level = (a >> 5) & 0x7
            size = ((b >> 22) + 1) * (((b >> 12) & 0x3FF) + 1) * ((b & 0xFFF) + 1) * (c + 1)
            key = {1: "L1d", 2: "L2", 3: "L3"}.get(level)
            if key and kind != 2:
                sizes[key] = size
    amd = vendor in ("AuthenticAMD", "HygonGenuine")
    if max_base >= 4 and not amd:
        walk(4)
    if max_ext >= 0x8000001D:
        walk(0x8000001D)
    rec["cpu_vendor"] = vendor or None
    rec["cpu_model"] = brand or rec.get("cpu_model")
    rec["cpu_family"] = family
    rec["cpu_model_number"] = model
    rec["cpu_stepping"] = sig & 0xF
    rec["cpu_flags"] = {
        "avx": ymm and bool(l1[2] >> 28 & 1),
        "avx2": ymm and bool(l7[1] >> 5 & 1),
        "fma": ymm and bool(l1[2] >> 12 & 1),
        "avx512f": zmm and bool(l7[1] >> 16 & 1),
        "asimd": False,
    }
    rec["os_ymm_enabled"] = bool(ymm)
    # features the CPU has but cannot be used because the OS does not enable their register state
    rec["os_disabled_flags"] = sorted(name for name, present, usable in (
        ("avx", l1[2] >> 28 & 1, ymm), ("avx2", l7[1] >> 5 & 1, ymm), ("fma", l1[2] >> 12 & 1, ymm),
        ("avx512f", l7[1] >> 16 & 1, zmm)) if present and not usable)
    rec["cache_sizes"] = sizes
    rec["cache_enumerated"] = all(sizes.values())
    rec["evidence_source"] = "cpuid"
    return rec

def gather(use_cpuid=True, progress=None):
    rec = procfs_evidence({"stage": "procfs"})
    if use_cpuid and rec["architecture"] in ("x86_64", "AMD64") and sys.maxsize > 2 ** 32:
        if progress:
            progress(rec)
        try:
            cpuid_evidence(rec)
        except Exception as exc:
            rec["cpuid_error"] = "%s: %s" % (type(exc).__name__, exc)
    rec["stage"] = "evidence"
    return rec

def main():
    args = sys.argv[1:]
    rec = gather(use_cpuid="--no-cpuid" not in args, progress=emit)
    emit(rec)
    if "--evidence-only" in args:
        return
    started = time.time()
    try:
        import torch
    except ImportError as exc:
        rec["stage"] = "done"
        rec["torch_missing"] = getattr(exc, "name", None) == "torch"
        rec["torch_error"] = "%s: %s" % (type(exc).__name__, exc)
        emit(rec)
        return
    except BaseException as exc:
        rec["stage"] = "done"
        rec["torch_error"] = "%s: %s" % (type(exc).__name__, exc)
        emit(rec)
        return
    rec["torch_import_seconds"] = round(time.time() - started, 3)
    rec["torch_version"] = str(getattr(torch, "__version__", "")) or None
    try:
        import torch.backends.cpu
        rec["torch_cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    except Exception:
        rec["torch_cpu_capability"] = None
    try:
        import torch.backends.mkldnn
        rec["mkldnn_available"] = bool(torch.backends.mkldnn.is_available())
    except Exception:
        rec["mkldnn_available"] = None
    rec["stage"] = "torch"
    emit(rec)
    sys.stderr.flush()
    import torch.backends.nnpack
    available = bool(torch.backends.nnpack.is_available())
    sys.stderr.flush()
    rec["nnpack_available"] = available
    if not available:
        try:
            rec["nnpack_built"] = "NNPACK is enabled" in torch.__config__.show()
        except Exception:
            rec["nnpack_built"] = None
    rec["stage"] = "done"
    emit(rec)

if __name__ == "__main__":
    main()
'''

_NNPACK_RE = re.compile(r"Could not initialize NNPACK! Reason: (.*?)\s*$")

_EVIDENCE_KEYS = (
    "cpu_vendor", "cpu_model", "cpu_family", "cpu_model_number", "cpu_stepping", "architecture",
    "cpu_flags", "os_ymm_enabled", "os_disabled_flags", "cache_enumerated", "cache_sizes", "proc_cpuinfo_readable",
    "evidence_source", "cpu_count", "python_version",
)

_STAGE_TEXT = {
    None: "before printing anything (interpreter start-up)",
    "procfs": "while reading CPUID through ctypes",
    "evidence": "while importing torch",
    "torch": "during the NNPACK check (torch.backends.nnpack.is_available())",
    "done": "after finishing",
}


def _signal_name(num):
    try:
        return signal.Signals(num).name
    except (ValueError, AttributeError):
        return "signal %d" % num


def _resolve(module, name):
    """Absolute path of an executable, or None."""
    if not name:
        return None
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return module.get_bin_path(name)


# Stand-in for coreutils `timeout` where it is missing: runs the command in its own process
# group, kills the whole group at the deadline (exit 124), and passes on the command's exit status
# or death by signal.
_TIMEOUT_SCRIPT = r'''
import os, signal, subprocess, sys
proc = subprocess.Popen(sys.argv[2:], start_new_session=True)
try:
    rc = proc.wait(timeout=float(sys.argv[1]))
except subprocess.TimeoutExpired:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()
    raise SystemExit(124)
if rc < 0:
    signal.signal(-rc, signal.SIG_DFL)
    os.kill(os.getpid(), -rc)
raise SystemExit(rc)
'''


def run_probe(module, cmd, timeout, env_update):
    """Run cmd with a hard timeout; returns rc, stdout, stderr, duration, timed_out."""
    timeout_bin = module.get_bin_path("timeout")
    if timeout_bin:
        # coreutils timeout runs the probe in its own process group and signals the whole group
        # (qemu-user and the interpreter alike): TERM at the deadline, KILL 5 s later.
        full = [timeout_bin, "--kill-after=5", "%ds" % timeout] + cmd
    else:
        full = [sys.executable, "-c", _TIMEOUT_SCRIPT, str(timeout)] + cmd
    started = time.monotonic()
    rc, out, err = module.run_command(full, environ_update=env_update, cwd="/", check_rc=False,
                                      expand_user_and_vars=False, errors="surrogate_then_replace")
    duration = time.monotonic() - started
    timed_out = rc in (124, 137, -signal.SIGKILL, -signal.SIGTERM) and duration >= timeout - 0.5
    return {"rc": rc, "stdout": out, "stderr": err, "duration": duration, "timed_out": timed_out}


def parse_records(stdout):
    last = None
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            try:
                rec = json.loads(line[len(_MARK):])
            except ValueError:
                continue
            if isinstance(rec, dict):
                last = rec
    return last


def find_nnpack_message(stderr):
    for line in stderr.splitlines():
        match = _NNPACK_RE.search(line)
        if match:
            return line.strip(), match.group(1)
    return None, None


def stderr_tail(stderr, lines=6, limit=1200):
    keep = [ln.rstrip() for ln in stderr.splitlines()
            if ln.strip() and "NNPACK" not in ln and "TCG doesn't support requested feature" not in ln]
    text = "\n".join(keep[-lines:])
    return text[-limit:] or None


def module_procfs_evidence():
    """Read /proc/cpuinfo and sysfs in the module's own process (no CPUID, no child)."""
    namespace = {"__name__": "nnpack_facts_probe"}
    exec(compile(_PROBE_SCRIPT, "<nnpack_facts probe>", "exec"), namespace)
    rec = namespace["gather"](use_cpuid=False)
    rec["evidence_source"] = "module-procfs+sysfs"
    rec["python_executable"] = sys.executable
    return rec


def _yn(value):
    return {True: "yes", False: "no"}.get(value, "unknown")


def fingerprint(ev):
    flags = ev.get("cpu_flags") or {}
    cache = ev.get("cache_enumerated")
    source = "%s | %s | %s family=%s model=%s stepping=%s | %s | caches=%s" % (
        ev.get("cpu_vendor") or "unknown-vendor",
        ev.get("cpu_model") or "unknown-model",
        ev.get("architecture") or "unknown-arch",
        ev.get("cpu_family"), ev.get("cpu_model_number"), ev.get("cpu_stepping"),
        " ".join("%s=%s" % (k, _yn(flags.get(k))) for k in ("avx", "avx2", "fma", "avx512f", "asimd")),
        {True: "L1/L2/L3", False: "not-enumerated", None: "unknown"}[cache],
    )
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16], source


def missing_requirements(ev):
    """NNPACK x86-64 requirements missing per the evidence (list of phrases), or None if unknown."""
    flags = ev.get("cpu_flags")
    if not flags:
        return None
    missing = []
    blocked = [f for f in ev.get("os_disabled_flags") or [] if f in ("avx2", "fma")]
    if blocked:
        missing.append("%s in CPUID but disabled by the OS (YMM register state off in XCR0)"
                       % "/".join(f.upper().replace("FMA", "FMA3") for f in blocked))
    if not flags.get("avx2") and "avx2" not in blocked:
        missing.append("no AVX2")
    if not flags.get("fma") and "fma" not in blocked:
        missing.append("no FMA3")
    if ev.get("cache_enumerated") is False:
        sizes = ev.get("cache_sizes") or {}
        absent = [k for k in ("L1d", "L2", "L3") if not sizes.get(k)]
        missing.append("no %s size in its CPUID cache leaves (cache hierarchy not enumerated)"
                       % "/".join(absent) if absent else "no enumerated cache hierarchy")
    return missing


def predict(ev):
    arch = ev.get("architecture") or ""
    src = ev.get("evidence_source") or "unknown"
    how = {"cpuid": "CPUID, CPUID cache leaves"}.get(src, "cpuinfo flags, sysfs cache")
    if ev.get("proc_cpuinfo_readable") is False:
        return False, "Linux: /proc/cpuinfo unreadable, so cpuinfo cannot initialize (%s)" % src
    if arch in ("x86_64", "AMD64"):
        method = "x86-64: avx2+fma+L1/L2/L3 cache enumeration (%s)" % how
        flags = ev.get("cpu_flags")
        if not flags:
            return None, method
        if not (flags.get("avx2") and flags.get("fma")):
            return False, method
        if ev.get("cache_enumerated") is None:
            return None, method
        return bool(ev.get("cache_enumerated")), method
    if arch in ("aarch64", "arm64"):
        return True, "aarch64: NEON backend, always supported when cpuinfo initializes (%s)" % src
    return None, "no NNPACK prediction for architecture %r" % arch


def describe_cpu(ev):
    return ev.get("cpu_model") or ev.get("cpu_vendor") or "this CPU"


def build_facts(params, res, rec, fallback_ev, wrapper):
    """Turn the probe outcome into the nnpack facts dict."""
    python = params["python"]
    ev = rec if rec and rec.get("stage") in ("evidence", "torch", "done") else fallback_ev
    facts = {k: ev.get(k) if ev else None for k in _EVIDENCE_KEYS}
    facts["evidence_interpreter"] = ev.get("python_executable") if ev else None
    facts["cpu_flags"] = facts["cpu_flags"] or {k: None for k in ("avx", "avx2", "fma", "avx512f", "asimd")}
    facts["cache_sizes"] = facts["cache_sizes"] or {"L1d": None, "L2": None, "L3": None}
    if ev and ev.get("cpuid_error"):
        facts["cpuid_error"] = ev["cpuid_error"]
    if not (rec and rec.get("stage") in ("evidence", "torch", "done")):
        # evidence from another interpreter: its version says nothing about the probed one
        facts["python_version"] = rec.get("python_version") if rec else None
        facts["evidence_python_version"] = ev.get("python_version") if ev else None
    torch_rec = rec if rec and rec.get("stage") in ("torch", "done") else {}
    facts.update({
        "python": python,
        "wrapper": wrapper,
        "torch_version": torch_rec.get("torch_version"),
        "torch_cpu_capability": torch_rec.get("torch_cpu_capability"),
        "mkldnn_available": torch_rec.get("mkldnn_available"),
        "torch_import_seconds": torch_rec.get("torch_import_seconds"),
        "duration": round(res["duration"], 3) if res else 0.0,
        "probe_rc": None if not res or res["timed_out"] else res["rc"],
        "probe_stderr_tail": None,
        "nnpack_message": None,
    })
    facts["predicted_available"], facts["prediction_method"] = predict(facts)
    facts["fingerprint"], facts["fingerprint_source"] = fingerprint(facts)
    return facts


def _prediction_clause(facts):
    pred = facts["predicted_available"]
    missing = missing_requirements(facts) or []
    if pred is True:
        return "the CPU evidence says NNPACK should initialize"
    if pred is False:
        if facts.get("proc_cpuinfo_readable") is False:
            return "the CPU evidence says NNPACK would fail (/proc/cpuinfo unreadable)"
        return "the CPU evidence says NNPACK would fail (%s)" % (", ".join(missing) or "requirements missing")
    return "the CPU evidence cannot tell whether NNPACK would initialize"


def classify(facts, params, res, rec):
    """Set available, status, reason (and message) in facts."""
    python = params["python"]
    cpu = describe_cpu(facts)
    msg_line, msg_reason = find_nnpack_message(res["stderr"]) if res else (None, None)
    facts["nnpack_message"] = msg_line
    stage = rec.get("stage") if rec else None

    def failed(reason):
        facts.update(available=None, status="probe_failed", reason=reason,
                     probe_stderr_tail=stderr_tail(res["stderr"]) if res else None)

    if stage == "done" and "nnpack_available" in rec:
        version = rec.get("torch_version") or "?"
        if rec["nnpack_available"]:
            facts.update(available=True, status="supported", reason=(
                "NNPACK initializes on %s: torch %s reports torch.backends.nnpack.is_available() == True, "
                "so nothing needs to change." % (cpu, version)))
            return
        facts["available"] = False
        if msg_reason == "Unsupported hardware.":
            missing = missing_requirements(facts)
            if missing:
                why = "CPU %s has %s; NNPACK on x86-64 needs AVX2, FMA3 and enumerated L1/L2/L3 caches" % (
                    cpu, " and ".join(missing))
            elif missing == [] and facts["architecture"] in ("x86_64", "AMD64"):
                why = ("CPU %s shows AVX2, FMA3 and L1/L2/L3 caches in the evidence, yet cpuinfo found the "
                       "hardware unsupported (check the hypervisor's CPUID cache leaves)" % cpu)
            else:
                why = "CPU %s does not meet NNPACK's requirements" % cpu
            facts.update(status="unsupported_hardware", reason=(
                "Could not initialize NNPACK! Reason: Unsupported hardware. (%s), so PyTorch %s prints this warning "
                "on every convolution that asks: turn NNPACK off in the service at start-up with "
                "torch.backends.nnpack.set_flags(False), or give the machine a CPU model with these features."
                % (why, version)))
        elif msg_reason == "Out of memory.":
            facts.update(status="cpuinfo_failed", reason=(
                "Could not initialize NNPACK! Reason: Out of memory. (the cpuinfo library could not initialize "
                "on %s; /proc/cpuinfo readable: %s), so expose /proc/cpuinfo and /sys/devices/system/cpu to the "
                "service or turn NNPACK off with torch.backends.nnpack.set_flags(False)."
                % (cpu, _yn(facts.get("proc_cpuinfo_readable")))))
        elif msg_reason is None and rec.get("nnpack_built") is False:
            facts.update(status="unsupported_hardware", reason=(
                "This torch %s build has no NNPACK (built with USE_NNPACK=0), so is_available() is False without "
                "any warning and nothing needs to change." % version))
        elif msg_reason is None:
            facts.update(status="probe_failed", probe_stderr_tail=stderr_tail(res["stderr"]), reason=(
                "torch %s reports NNPACK unavailable on %s but printed no NNPACK reason (is TORCH_CPP_LOG_LEVEL "
                "forced elsewhere?), so turn NNPACK off with torch.backends.nnpack.set_flags(False) to be safe."
                % (version, cpu)))
        else:
            facts.update(status="probe_failed", probe_stderr_tail=stderr_tail(res["stderr"]), reason=(
                "Could not initialize NNPACK! Reason: %s (an unexpected NNPACK status on %s), so turn NNPACK off "
                "with torch.backends.nnpack.set_flags(False) and report this." % (msg_reason, cpu)))
        return

    if stage == "done" and rec.get("torch_missing"):
        facts.update(available=None, status="torch_missing", reason=(
            "%s cannot import torch (%s), so NNPACK could not be checked and %s; install torch into that "
            "environment or point the python option at the service's virtualenv python."
            % (python, rec.get("torch_error"), _prediction_clause(facts))))
        return
    if stage == "done" and rec.get("torch_error"):
        failed("import torch failed in %s (%s), so NNPACK could not be checked and %s; repair that torch "
               "installation." % (python, rec["torch_error"], _prediction_clause(facts)))
        return

    # No final record: the probe did not finish.
    where = _STAGE_TEXT.get(stage, "at stage %s" % stage)
    if res["timed_out"]:
        failed("The NNPACK probe with %s timed out after %d s %s and was killed, so %s; raise the timeout option "
               "(emulated CPUs need minutes) or check the interpreter." % (
                   python, params["timeout"], where, _prediction_clause(facts)))
        return
    rc = res["rc"]
    if rc is not None and rc < 0:
        hint = ""
        if stage == "torch" and rc == -signal.SIGSEGV:
            hint = " (cpuinfo crashes like this when /proc and /sys are hidden)"
        failed("The NNPACK probe with %s was killed by %s (%d) %s%s, so %s; run the interpreter by hand to see why."
               % (python, _signal_name(-rc), -rc, where, hint, _prediction_clause(facts)))
        return
    if rc and rc > 128 and rc - 128 < 65:
        failed("The NNPACK probe with %s exited with status %d (likely killed by %s) %s, so %s; run the "
               "interpreter by hand to see why."
               % (python, rc, _signal_name(rc - 128), where, _prediction_clause(facts)))
        return
    if rc:
        last = stderr_tail(res["stderr"], lines=1, limit=200)
        failed("The NNPACK probe with %s exited with status %d %s%s, so %s; run the interpreter by hand to see "
               "why." % (python, rc, where, " (%s)" % last if last else "", _prediction_clause(facts)))
        return
    junk = " ".join(res["stdout"].split())[:80]
    failed("The NNPACK probe with %s exited without a readable result (stdout began %r), so %s; check that the "
           "python option names a real Python interpreter." % (python, junk, _prediction_clause(facts)))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            python=dict(type="path", default="/usr/bin/python3"),
            timeout=dict(type="int", default=180),
            wrapper=dict(type="list", elements="str", default=[]),
            environment=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be a positive number of seconds, got %d" % params["timeout"])
    if not params["python"]:
        module.fail_json(msg="python must name an interpreter")
    if any(not part for part in params["wrapper"]):
        module.fail_json(msg="wrapper must not contain empty strings: %r" % (params["wrapper"],))
    user_env = {str(k): "" if v is None else str(v) for k, v in params["environment"].items()}

    # Python ignores empty PYTHON* variables: blank the inherited ones so the probe sees the
    # interpreter's own sys.path, as the service does.
    env_update = {k: "" for k in os.environ if k.startswith("PYTHON")}
    env_update.update(user_env)
    env_update.update({"LC_ALL": "C", "LANG": "C", "TORCH_CPP_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})

    wrapper = list(params["wrapper"])
    python = params["python"]
    wrapper_cmd = []
    problem = advice = None
    if wrapper:
        wrapper_bin = _resolve(module, wrapper[0])
        if wrapper_bin:
            wrapper_cmd = [wrapper_bin] + wrapper[1:]
        else:
            problem = "the wrapper command %s was not found or is not executable" % wrapper[0]
            advice = "install it or fix the wrapper option"
    python_bin = _resolve(module, python)
    if not python_bin and not problem:
        problem = "the interpreter %s does not exist or is not executable" % python
        advice = "point the python option at the service's virtualenv python (for example /opt/app/venv/bin/python)"

    res = rec = None
    if not problem:
        res = run_probe(module, wrapper_cmd + [python_bin, "-c", _PROBE_SCRIPT], params["timeout"], env_update)
        rec = parse_records(res["stdout"])
        if rec and rec.get("stage") == "procfs" and not res["timed_out"] and res["rc"] != 0:
            # Died while executing CPUID through ctypes: probe again without it.
            res = run_probe(module, wrapper_cmd + [python_bin, "-c", _PROBE_SCRIPT, "--no-cpuid"],
                            params["timeout"], env_update)
            rec = parse_records(res["stdout"])

    fallback_ev = None
    if not (rec and rec.get("stage") in ("evidence", "torch", "done")):
        # The probe gave no evidence: ask the module's own interpreter (under the same wrapper, so
        # an emulated CPU is still the one described), and read procfs in-process as a last resort.
        if wrapper and not wrapper_cmd:
            ev_res = None
        else:
            ev_res = run_probe(module, wrapper_cmd + [sys.executable, "-c", _PROBE_SCRIPT, "--evidence-only"],
                               min(params["timeout"], 60), env_update)
        ev_rec = parse_records(ev_res["stdout"]) if ev_res else None
        if ev_rec and ev_rec.get("stage") == "evidence":
            fallback_ev = ev_rec
        else:
            try:
                fallback_ev = module_procfs_evidence()
                if wrapper:
                    fallback_ev["evidence_source"] += " (host view; wrapper not applied)"
            except Exception as exc:  # never fail the play for evidence trouble
                fallback_ev = {"evidence_source": "none (%s)" % exc}

    facts = build_facts(params, res, rec, fallback_ev, wrapper)
    if problem:
        facts.update(available=None, status="probe_failed", reason=(
            "NNPACK could not be checked because %s, so %s; %s." % (problem, _prediction_clause(facts), advice)))
    else:
        classify(facts, params, res, rec)

    module.exit_json(changed=False, ansible_facts={"nnpack": facts})


if __name__ == "__main__":
    main()
