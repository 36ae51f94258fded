"""nnpack_facts with the real torch under qemu-user CPU models (each model is probed once per session).

Under qemu-user, /proc/cpuinfo shows the host's CPU; the facts must describe the emulated one (CPUID).
"""
import pytest

from nnpack_facts_helpers import (NO_TORCH_PYTHON, NNPACK_TEXT, QEMU, QEMU_CPU_ENV, VENV_PYTHON, assert_no_leak,
                                  needs_qemu, needs_torch, run_module)

pytestmark = [pytest.mark.slow, pytest.mark.qemu_user, needs_qemu]

UNSUPPORTED = NNPACK_TEXT + " Reason: Unsupported hardware."


def emulated(tmp, cpu, python=VENV_PYTHON, **extra):
    args = {"python": str(python), "wrapper": [QEMU, "-cpu", cpu] + QEMU_CPU_ENV.get(cpu, []), "timeout": 600}
    args.update(extra)
    run = run_module(tmp, args)
    assert run.rc == 0, run.result
    return run


@pytest.fixture(scope="module")
def nehalem(module_tmp):
    return emulated(module_tmp, "Nehalem")


@pytest.fixture(scope="module")
def haswell(module_tmp):
    return emulated(module_tmp, "Haswell")


@pytest.fixture(scope="module")
def haswell_nofma(module_tmp):
    return emulated(module_tmp, "Haswell,-fma")


@pytest.fixture(scope="module")
def qemu_max(module_tmp):
    return emulated(module_tmp, "max")


@needs_torch
def test_nehalem_is_unsupported_hardware(nehalem):
    facts = nehalem.facts
    assert facts["status"] == "unsupported_hardware"
    assert facts["available"] is False and facts["predicted_available"] is False
    assert facts["cpu_flags"]["avx2"] is False and facts["cpu_flags"]["fma"] is False
    assert facts["cpu_vendor"] == "GenuineIntel" and "Nehalem" in facts["cpu_model"]
    assert facts["evidence_source"] == "cpuid"
    assert facts["torch_cpu_capability"] == "DEFAULT"
    assert facts["nnpack_message"].endswith(UNSUPPORTED)
    assert UNSUPPORTED in facts["reason"]
    assert "no AVX2" in facts["reason"] and "no FMA3" in facts["reason"]
    assert "avx2=no fma=no" in facts["fingerprint_source"]
    assert_no_leak(nehalem)


@needs_torch
def test_haswell_is_supported(haswell):
    facts = haswell.facts
    assert facts["status"] == "supported"
    assert facts["available"] is True and facts["predicted_available"] is True
    assert facts["cpu_flags"]["avx2"] is True and facts["cpu_flags"]["fma"] is True
    assert facts["cache_enumerated"] is True
    assert "Haswell" in facts["cpu_model"] and facts["torch_cpu_capability"] == "AVX2"
    assert facts["nnpack_message"] is None
    assert_no_leak(haswell)


@needs_torch
def test_haswell_without_fma_is_unsupported_and_names_fma(haswell_nofma):
    facts = haswell_nofma.facts
    assert facts["status"] == "unsupported_hardware" and facts["available"] is False
    assert facts["cpu_flags"]["avx2"] is True and facts["cpu_flags"]["fma"] is False
    assert facts["predicted_available"] is False
    assert "FMA" in facts["reason"] and "no AVX2" not in facts["reason"]


@needs_torch
def test_qemu_max_has_avx2_but_no_cache_leaves(qemu_max):
    facts = qemu_max.facts
    assert facts["status"] == "unsupported_hardware" and facts["available"] is False
    assert facts["torch_cpu_capability"] == "AVX2"        # capability AVX2 does not imply NNPACK
    assert facts["cpu_flags"]["avx2"] is True and facts["cpu_flags"]["fma"] is True
    assert facts["cache_enumerated"] is False and facts["predicted_available"] is False
    assert "cache hierarchy not enumerated" in facts["reason"]


@needs_torch
def test_fingerprints_tell_cpu_models_apart(nehalem, haswell, haswell_nofma, qemu_max):
    prints = [run.facts["fingerprint"] for run in (nehalem, haswell, haswell_nofma, qemu_max)]
    assert len(set(prints)) == 4, prints


def test_torch_missing_under_emulation_predicts_from_emulated_cpu(module_tmp):
    run = emulated(module_tmp, "Nehalem", python=NO_TORCH_PYTHON)
    facts = run.facts
    assert facts["status"] == "torch_missing" and facts["available"] is None
    assert facts["predicted_available"] is False
    assert "Nehalem" in facts["cpu_model"] and facts["evidence_source"] == "cpuid"
    assert "no AVX2" in facts["reason"]


@needs_torch
def test_missing_interpreter_under_emulation_keeps_emulated_evidence(module_tmp, nehalem):
    """The probe cannot start; the module's own interpreter gathers evidence under the same wrapper."""
    run = emulated(module_tmp, "Nehalem", python="/nonexistent/python3")
    facts = run.facts
    assert facts["status"] == "probe_failed" and facts["available"] is None
    assert "Nehalem" in facts["cpu_model"] and facts["predicted_available"] is False
    # same CPU, other interpreter and no torch: same fingerprint as the full probe
    assert facts["fingerprint"] == nehalem.facts["fingerprint"]
