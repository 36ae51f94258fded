"""Which CPU is this? The one definition of "same CPU" for the role and the service.

Evidence (``gather``) is read inside the calling process, so it describes the CPU
that process really runs on, also under qemu-user where /proc/cpuinfo shows the
host: on x86-64 CPUID is executed through ctypes (brand string, family/model/
stepping, AVX/AVX2/FMA/AVX-512F usable per XGETBV, the cache leaves pytorch/cpuinfo
reads), with /proc/cpuinfo and /sys/devices/system/cpu/cpu0/cache as fallback.
``fingerprint`` hashes that evidence (never clock speed or core counts): two CPUs
are the same CPU exactly when their fingerprints are equal.

Used, from this one file, by
  * the role's ``nnpack_facts`` module: ``roles/pytorch_backend/module_utils/cpu_identity.py``
    is a symlink to this file; the module's probe child runs ``gather`` with the
    release's interpreter and the facts carry ``fingerprint``, which the role writes
    into the CPU record (``/etc/torch-backend/cpu-record.json``);
  * the service's drift guard (``drift.py``), which computes the fingerprint of the
    CPU it runs on and compares it with the record's.

Why the file lives here and the symlink in module_utils, not the other way round:
the service package is shipped to the hosts as a tar of its files (and installed
with pip from there), where a symlink would arrive as a dangling link; Ansible
reads module_utils on the controller with a plain open(), which follows the link
(tests/module/test_nnpack_facts_ansible.py checks this with real Ansible runs).

Constraints that come with sharing: standard library only (never torch; the
service package cannot import Ansible), Python 3.8+ (targets' interpreters), and
the fingerprint text must never change, since hosts compare it with what earlier
deploys recorded.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys

FLAGS = ("avx", "avx2", "fma", "avx512f", "asimd")
CPUINFO = "/proc/cpuinfo"
SYSFS_CACHE = "/sys/devices/system/cpu/cpu0/cache"


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


def sysfs_caches(base=SYSFS_CACHE):
    """Cache sizes in bytes by level from sysfs, or None when sysfs has no cache directory."""
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


def parse_cpuinfo(text, machine):
    """Evidence from /proc/cpuinfo text (None: unreadable), first processor block only."""
    info = {}
    for line in (text or "").splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip().lower(), value.strip())
    words = set((info.get("flags") or info.get("features") or "").split())
    arm = machine in ("aarch64", "arm64")
    return {
        "proc_cpuinfo_readable": text is not None,
        "cpu_vendor": _clean(info.get("vendor_id")) or (
            "CPU implementer " + info["cpu implementer"] if "cpu implementer" in info else None),
        "cpu_model": _clean(info.get("model name")) or (
            "CPU part " + info["cpu part"] if "cpu part" in info else None),
        "cpu_family": _int(info.get("cpu family")),
        "cpu_model_number": _int(info.get("model")),
        "cpu_stepping": _int(info.get("stepping")),
        "cpu_flags": {
            "avx": "avx" in words, "avx2": "avx2" in words, "fma": "fma" in words,
            "avx512f": "avx512f" in words, "asimd": arm and ("asimd" in words or "neon" in words),
        } if text is not None else None,
    }


def procfs_evidence(rec):
    machine = platform.machine() or ""
    rec["architecture"] = machine
    rec["cpu_count"] = os.cpu_count()
    rec["python_version"] = platform.python_version()
    rec["python_executable"] = sys.executable
    rec.update(parse_cpuinfo(_read(CPUINFO), machine))
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
    import ctypes
    import mmap
    import struct
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
    """Evidence about the CPU this process runs on (a dict; "stage" is "evidence").

    ``progress(rec)`` is called with the procfs/sysfs evidence just before CPUID is
    executed, so a caller that sees the process die can tell it died in CPUID.
    A CPUID that raises leaves the procfs/sysfs evidence and ``cpuid_error``.
    """
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


def _yn(value):
    return {True: "yes", False: "no"}.get(value, "unknown")


def fingerprint(ev):
    """(16 hex digits, the text they hash) for evidence from ``gather`` (or facts holding it).

    Two CPUs are the same CPU exactly when these are equal. Never change the text:
    hosts compare fingerprints with the ones earlier deploys recorded.
    """
    flags = ev.get("cpu_flags") or {}
    cache = ev.get("cache_enumerated")
    source = "%s | %s | %s family=%s model=%s stepping=%s | %s | caches=%s" % (
        ev.get("cpu_vendor") or "unknown-vendor",
        ev.get("cpu_model") or "unknown-model",
        ev.get("architecture") or "unknown-arch",
        ev.get("cpu_family"), ev.get("cpu_model_number"), ev.get("cpu_stepping"),
        " ".join("%s=%s" % (k, _yn(flags.get(k))) for k in FLAGS),
        {True: "L1/L2/L3", False: "not-enumerated", None: "unknown"}[cache],
    )
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16], source
