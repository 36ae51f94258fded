#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2026, torch-backend contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations

DOCUMENTATION = r"""
---
module: nnpack_facts
short_description: Find out whether PyTorch's NNPACK can initialize on a host, as facts
description:
  - Runs one short probe with the Python interpreter of the PyTorch service (normally its virtualenv python)
    in a child process. The child gathers CPU evidence (CPUID executed through C(ctypes) on x86-64, with
    C(/proc/cpuinfo) and C(/sys/devices/system/cpu/cpu0/cache) as fallback), imports C(torch) and calls
    C(torch.backends.nnpack.is_available) exactly once. Its standard error is captured, so the
    C(Could not initialize NNPACK! Reason ...) warning is parsed, never leaked.
  - The module itself never imports C(torch). The evidence is taken inside the probed process, so it describes
    the CPU that interpreter runs on, also under an emulating O(wrapper) whose C(/proc/cpuinfo) shows the host.
  - When the interpreter is missing, cannot import C(torch), crashes, hangs or prints garbage, the module still
    returns facts (V(torch_missing) or V(probe_failed)) with CPU evidence and a prediction made from it; it fails
    only for invalid arguments. It changes nothing, so it runs fully in check mode.
version_added: "1.0.0"
author:
  - pytorch_backend role maintainers (@pytorch-backend)
options:
  python:
    description:
      - Interpreter to probe with, normally the service's virtualenv python. A bare name is looked up in E(PATH).
    type: path
    default: /usr/bin/python3
  timeout:
    description:
      - Seconds (a positive integer) the probe may take before its whole process group is killed and the status
        is V(probe_failed). Natively the probe takes about as long as C(import torch); emulated CPUs need minutes.
      - When the probe gave no CPU evidence, an evidence-only child (no C(torch)) of the module's own interpreter
        runs under the same O(wrapper) with a limit of its own, 60 seconds, so that a tight O(timeout) on a slow host
        still leaves the host's CPU identity (and so its fingerprint) known.
    type: int
    default: 180
  wrapper:
    description:
      - Command prefix placed before the interpreter, for example C([qemu-x86_64-static, -cpu, Nehalem]) to probe
        as if on another CPU model. The first element is looked up in E(PATH) when it is not a path.
    type: list
    elements: str
    default: []
  environment:
    description:
      - Extra environment variables for the probe child, for example the C(PYTHONPATH) the service runs with.
      - C(PYTHON*) variables of the Ansible process are not passed on unless set here, so that the probe sees the
        interpreter's own C(sys.path). C(LC_ALL=C) and C(TORCH_CPP_LOG_LEVEL=WARNING) are always forced.
    type: dict
    default: {}
  record_file:
    description:
      - The host's CPU record from the last deploy (C(/etc/torch-backend/cpu-record.json)). When given, the module
        reads it and returns RV(decision), the USE_NNPACK decision made from the facts and that record.
      - A missing file is a host without a record. An unreadable file, or one that is not a JSON object, is treated
        the same way with a warning (the decision then writes C(USE_NNPACK=0) on an undecided probe, which is safe).
      - Without it no decision is returned.
    type: path
  probed:
    description:
      - Whether O(python) is the release's interpreter, so that its answer decides. V(false) when there is no
        release to probe with yet (a check run, a run without the install stage); the prediction from the CPU
        evidence (C(predicted_available)) then decides, and RV(decision.messages) says so.
      - Used only with O(record_file).
    type: bool
    default: true
  host_name:
    description:
      - The host's name in RV(decision.messages), normally C(inventory_hostname).
      - Used only with O(record_file).
    type: str
    default: ''
  release:
    description:
      - The id of the release O(python) belongs to. With O(probed), the new record names it as C(probed_release), so
        that a later deploy of the same release on the same CPU can take the recorded verdict instead of probing.
      - Used only with O(record_file).
    type: str
    default: ''
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
  - On x86-64 NNPACK initializes only with AVX2 and FMA3 (YMM state enabled by the OS) and with L1, L2 and L3
    sizes in the CPUID cache leaves (leaf 4 on non-AMD vendors, leaf 0x8000001D). On aarch64 it always does unless
    cpuinfo fails. C(predicted_available) applies these rules to the evidence; C(available) is PyTorch's answer.
  - "C(Could not initialize NNPACK! Reason: Out of memory.) means cpuinfo could not initialize (for example an
    unreadable C(/proc/cpuinfo)); the status is then V(cpuinfo_failed)."
  - The evidence and C(fingerprint) are computed by the same code as the service's drift guard
    (C(torch_backend/cpu_identity.py), C(module_utils/cpu_identity.py) in the role); equal fingerprints mean the same CPU.
requirements:
  - Python 3.8 or later on the target; C(torch) only in the probed interpreter.
seealso:
  - name: PyTorch NNPACK backend flags
    description: C(torch.backends.nnpack.set_flags) with C(False) turns NNPACK off at run time without the warning.
    link: https://pytorch.org/docs/stable/backends.html
"""

EXAMPLES = r"""
- name: Probe NNPACK with the service's virtualenv
  nnpack_facts:
    python: /opt/inference/venv/bin/python

- name: Tell the operator why
  ansible.builtin.debug:
    msg: "{{ ansible_facts['nnpack']['status'] }}: {{ ansible_facts['nnpack']['reason'] }}"

- name: Probe as if on a Nehalem CPU (user-mode emulation; slow)
  nnpack_facts:
    python: /opt/inference/venv/bin/python
    wrapper: [qemu-x86_64-static, -cpu, Nehalem]
    timeout: 300

- name: Probe and decide USE_NNPACK against the last deploy's record
  nnpack_facts:
    python: /opt/inference/releases/r42/venv/bin/python
    record_file: /etc/torch-backend/cpu-record.json
    host_name: "{{ inventory_hostname }}"
  register: probe

- name: Say what the decision says
  ansible.builtin.debug:
    msg: "{{ probe.decision.messages | map(attribute='text') }}"

- name: Probe with the environment the service runs with
  nnpack_facts:
    python: /opt/inference/venv/bin/python
    environment:
      PYTHONPATH: /opt/inference/src
"""

RETURN = r"""
decision:
  description:
    - The USE_NNPACK decision from the facts and the host's previous CPU record (module_utils/nnpack_decision.py).
  returned: when O(record_file) is given
  type: complex
  contains:
    record:
      description:
        - "The CPU record to write (the previous one when kept): C(fingerprint), C(cpu_model), C(cpu_flags) (C(avx),
          C(avx2), C(fma), C(avx512f)), C(cpu_capability), C(status), C(available) and C(use_nnpack) (V('') only when
          C(available) is V(true), else V('0')); and C(probed_release), O(release), for a new probed record."
      type: dict
      sample: {"fingerprint": "305b35c0b213a2bb", "cpu_model": "Intel Core i7 9xx (Nehalem Class Core i7)",
               "cpu_flags": {"avx": false, "avx2": false, "fma": false, "avx512f": false}, "cpu_capability": "DEFAULT",
               "status": "unsupported_hardware", "available": false, "use_nnpack": "0"}
    previous:
      description: The record read from O(record_file); V({}) when the host has none (or an unusable one).
      type: dict
    kept:
      description:
        - The probe was undecided (V(probe_failed) or V(torch_missing)) on the same CPU as a record with a verdict,
          so the recorded verdict stays instead of flipping on one timeout. Never with O(probed=false).
      type: bool
    cpu_moved:
      description: The previous record has a fingerprint and it differs from the new record's.
      type: bool
    use_nnpack_off:
      description: The record's C(use_nnpack) is V('0'), so C(USE_NNPACK=0) is written.
      type: bool
    predicted:
      description: The verdict is the prediction from the CPU evidence (O(probed=false)).
      type: bool
    messages:
      description:
        - What to tell the operator, in order; each has C(level) (V(info) or V(warning)) and C(text). The texts
          name the host as O(host_name).
      type: list
      elements: dict
      sample:
        - level: warning
          text: >-
            WARNING: NNPACK could not be probed on web1 (probe_failed: The NNPACK probe ... timed out ...);
            same CPU as recorded, so the recorded verdict stays (supported, USE_NNPACK unset).
ansible_facts:
  description: Facts added under C(nnpack).
  returned: always
  type: complex
  contains:
    nnpack:
      description: The NNPACK verdict and the CPU evidence behind it. Keys are always present unless noted.
      returned: always
      type: complex
      contains:
        available:
          description: PyTorch's own answer, C(torch.backends.nnpack.is_available); V(null) when undecided.
          type: bool
        status:
          description:
            - V(supported) NNPACK initializes. V(unsupported_hardware) NNPACK refused the CPU. V(not_built) this
              torch was built without NNPACK, so no CPU can run it. V(cpuinfo_failed) cpuinfo could not initialize.
              V(torch_missing) the interpreter cannot import C(torch).
            - V(probe_failed) the interpreter or wrapper is missing, the probe crashed, timed out, printed no readable
              result, C(import torch) raised, or PyTorch said no with an unknown reason (C(available) V(false)).
          type: str
          choices: [supported, unsupported_hardware, not_built, cpuinfo_failed, torch_missing, probe_failed]
        reason:
          description: One sentence a person can act on, with the exact NNPACK message when one was printed.
          type: str
          sample: "Could not initialize NNPACK! Reason: Unsupported hardware. (CPU ... has no AVX2 and no FMA3; ...)"
        nnpack_message:
          description: The exact warning line PyTorch printed on standard error, or V(null).
          type: str
        predicted_available:
          description: Whether NNPACK should initialize, judged from the CPU evidence alone (V(null) when unknown).
          type: bool
        prediction_method:
          description: How C(predicted_available) was decided.
          type: str
          sample: "x86-64: avx2+fma+L1/L2/L3 cache enumeration (CPUID, CPUID cache leaves)"
        cpu_vendor:
          description: CPU vendor (CPUID leaf 0 or C(vendor_id)).
          type: str
        cpu_model:
          description: CPU model name (CPUID brand string or C(model name)).
          type: str
        cpu_family:
          description: CPU family number (x86), or V(null).
          type: int
        cpu_model_number:
          description: CPU model number (x86), or V(null).
          type: int
        cpu_stepping:
          description: CPU stepping (x86), or V(null).
          type: int
        architecture:
          description: Machine architecture as the probed interpreter sees it (C(uname -m)).
          type: str
        cpu_flags:
          description: C(avx), C(avx2), C(fma), C(avx512f) (usable per XGETBV on x86-64) and C(asimd) (aarch64).
          type: dict
          sample: {"avx": false, "avx2": false, "fma": false, "avx512f": false, "asimd": false}
        os_ymm_enabled:
          description: Whether the OS enables the AVX (YMM) register state (XGETBV); V(null) without CPUID.
          type: bool
        os_disabled_flags:
          description: Features in CPUID that the OS leaves unusable (register state off); V(null) without CPUID.
          type: list
          elements: str
        cpuid_error:
          description: Why CPUID could not be executed in the probe. Present only when CPUID failed.
          type: str
        cache_enumerated:
          description: Whether L1 data, L2 and L3 sizes are all enumerated (CPUID cache leaves, else sysfs), or V(null).
          type: bool
        cache_sizes:
          description: Cache sizes in bytes by level (C(L1d), C(L2), C(L3)); V(null) for a level not enumerated.
          type: dict
        proc_cpuinfo_readable:
          description: Whether C(/proc/cpuinfo) could be read by the probed process (cpuinfo needs it on Linux).
          type: bool
        evidence_source:
          description:
            - C(cpuid) or C(procfs+sysfs); C(none) when no child gave evidence. With a missing O(wrapper) the
              module's own interpreter describes the host, marked C((host view; wrapper not applied)).
          type: str
        evidence_interpreter:
          description: Interpreter whose process gathered the evidence (differs from O(python) after a failed probe).
          type: str
        fingerprint:
          description:
            - Short stable hex id of the CPU (vendor, model, family/model/stepping, architecture, the flags above and
              whether caches are enumerated; never clock speed or core counts). Equal means the same CPU.
          type: str
          sample: 305b35c0b213a2bb
        fingerprint_source:
          description: The text the fingerprint is hashed from.
          type: str
          sample: >-
            GenuineIntel | Intel Core i7 9xx (Nehalem Class Core i7) | x86_64 family=6 model=26 stepping=3 |
            avx=no avx2=no fma=no avx512f=no asimd=no | caches=L1/L2/L3
        torch_version:
          description: C(torch.__version__), or V(null).
          type: str
        torch_cpu_capability:
          description: C(torch.backends.cpu.get_cpu_capability) (C(DEFAULT), C(AVX2), C(AVX512), ...), or V(null).
          type: str
        mkldnn_available:
          description: C(torch.backends.mkldnn.is_available), or V(null).
          type: bool
        torch_import_seconds:
          description: Time C(import torch) took inside the probe, or V(null).
          type: float
        python:
          description: The interpreter probed with (O(python) as given).
          type: str
        python_version:
          description: Version of the probed interpreter, or V(null) when it never started.
          type: str
        evidence_python_version:
          description: Version of the interpreter that gathered the evidence. Present only when the probe gave none.
          type: str
        wrapper:
          description: The O(wrapper) used.
          type: list
          elements: str
        duration:
          description: Wall time of the probe in seconds.
          type: float
        cpu_count:
          description: Logical CPUs seen by the probed process (informational).
          type: int
        probe_rc:
          description: Exit status of the probe (negative for a signal), or V(null) when it did not run or timed out.
          type: int
        probe_stderr_tail:
          description: Last lines of the probe's standard error when the status is V(probe_failed), else V(null).
          type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cpu_record import read_previous
from ansible.module_utils.nnpack_decision import decide
from ansible.module_utils.nnpack_run import child_env, probe
from ansible.module_utils.nnpack_verdict import verdict


def main():
    module = AnsibleModule(
        argument_spec=dict(
            python=dict(type="path", default="/usr/bin/python3"),
            timeout=dict(type="int", default=180),
            wrapper=dict(type="list", elements="str", default=[]),
            environment=dict(type="dict", default={}),
            record_file=dict(type="path"),
            probed=dict(type="bool", default=True),
            host_name=dict(type="str", default=""),
            release=dict(type="str", default=""),
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

    def resolve(name):
        if os.sep in name:
            return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
        return module.get_bin_path(name)

    wrapper, python = list(params["wrapper"]), params["python"]
    prefix, problem = [], None
    if wrapper:
        wrapper_bin = resolve(wrapper[0])
        if wrapper_bin:
            prefix = [wrapper_bin] + wrapper[1:]
        else:
            problem = ("the wrapper command %s was not found or is not executable" % wrapper[0],
                       "install it or fix the wrapper option")
    python_bin = resolve(python)
    if not python_bin and not problem:
        problem = ("the interpreter %s does not exist or is not executable" % python,
                   "point the python option at the service's virtualenv python (for example /opt/app/venv/bin/python)")

    env = child_env(os.environ, dict((str(k), "" if v is None else str(v)) for k, v in params["environment"].items()))
    res, rec, fallback_ev = probe(None if problem else python_bin, prefix, params["timeout"], env,
                                  host_view=bool(wrapper) and not prefix)
    facts = verdict(python, params["timeout"], wrapper, res, rec, fallback_ev, problem)
    result = {"changed": False, "ansible_facts": {"nnpack": facts}}
    if params["record_file"]:
        previous, problem = read_previous(params["record_file"])
        if problem:
            module.warn("ignoring the CPU record %s: %s" % (params["record_file"], problem))
        # not a fact: a decision made against one record file is no property of the host
        result["decision"] = decide(facts, previous, params["probed"], module.check_mode, params["host_name"],
                                    params["release"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
