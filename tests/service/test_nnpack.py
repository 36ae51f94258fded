"""The NNPACK decision logic, in-process (no emulator)."""

import os
import signal

from torch_backend import nnpack


def test_env_values_are_obeyed_without_probing():
    def no_probe():
        raise AssertionError("must not probe when USE_NNPACK is set")
    assert nnpack.decide("0", no_probe) == nnpack.Decision(False, "env", "USE_NNPACK=0")
    assert nnpack.decide("1", no_probe) == nnpack.Decision(True, "env", "USE_NNPACK=1")


def test_unset_probes():
    d = nnpack.decide(None, lambda: (False, "probe: Unsupported hardware"))
    assert d == nnpack.Decision(False, "auto", "probe: Unsupported hardware")
    assert d.describe() == "disabled (auto: probe: Unsupported hardware)"
    assert nnpack.decide(None, lambda: (True, "probe: NNPACK initialized")).enabled


def test_probe_on_this_host_matches_torch():
    import torch

    available, reason = nnpack.probe()
    assert available == torch.backends.nnpack.is_available(), reason


def test_probe_keeps_the_warning_out_of_our_stderr(monkeypatch, capfd):
    import torch

    def unsupported():  # what torch does on such a CPU: C++ warning on fd 2, then False
        os.write(2, b"[W NNPACK.cpp:56] Could not initialize NNPACK! Reason: Unsupported hardware.\n")
        return False
    monkeypatch.setattr(torch.backends.nnpack, "is_available", unsupported)
    assert nnpack.probe() == (False, "probe: Unsupported hardware")
    assert capfd.readouterr().err == ""


def test_probe_names_a_torch_without_nnpack_stand_in_build_summary(monkeypatch):
    # Stand-in: no torch built without NNPACK installs here (Debian's python3-torch is one);
    # its build summary lacks the line this torch's has, and is_available() says no silently.
    import torch

    assert nnpack.built_with_nnpack()  # the real summary of the CPU wheel
    monkeypatch.setattr(torch.backends.nnpack, "is_available", lambda: False)
    assert nnpack.probe() == (False, "probe: is_available() returned False")
    summary = torch.__config__.show().replace("NNPACK is enabled", "")
    monkeypatch.setattr(torch.__config__, "show", lambda: summary)
    assert nnpack.probe() == (False, "probe: this torch was built without NNPACK")


def test_probe_survives_a_crashing_check(monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.nnpack, "is_available",
                        lambda: os.kill(os.getpid(), signal.SIGSEGV))
    available, reason = nnpack.probe()
    assert not available and "signal 11" in reason


def test_probe_times_out(monkeypatch):
    import time

    import torch

    monkeypatch.setattr(torch.backends.nnpack, "is_available", lambda: time.sleep(60))
    assert nnpack.probe(timeout=1.0) == (False, "probe timed out after 1 s")


def test_apply_disables_torch_flag():
    import torch

    before = torch._C._get_nnpack_enabled()
    try:
        nnpack.apply(nnpack.Decision(True, "env", "USE_NNPACK=1"))
        assert nnpack.enabled_in_torch() == before
        nnpack.apply(nnpack.Decision(False, "env", "USE_NNPACK=0"))
        assert nnpack.enabled_in_torch() is False
    finally:
        torch.backends.nnpack.set_flags(before)
