"""When a deploy takes the CPU record's NNPACK verdict instead of probing (filter_plugins/probe_reuse.py),
as a table: the host read (torch_backend_host's `host`) and the run in, the reason to probe out ("" when
the record's verdict stands). Then the decision it gives, in the shape of nnpack_facts' `decision`."""
import base64
import importlib.util
import json

import pytest

from conftest import ROLE

spec = importlib.util.spec_from_file_location("pytorch_backend_filter_probe_reuse", ROLE / "filter_plugins" / "probe_reuse.py")
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
FILTERS = plugin.FilterModule().filters()
why_probe = FILTERS["pytorch_backend_why_probe"]
recorded_decision = FILTERS["pytorch_backend_recorded_decision"]

RELEASE = "3f2a9c0d41be"
RECORD = {"fingerprint": "305b35c0b213a2bb", "cpu_model": "Intel Xeon E3-12xx v3 (Haswell)",
          "cpu_flags": {"avx": True, "avx2": True, "fma": True, "avx512f": False}, "cpu_capability": "AVX2",
          "status": "supported", "available": True, "use_nnpack": "", "probed_release": RELEASE}
OFF = dict(RECORD, status="unsupported_hardware", available=False, use_nnpack="0")


def content(record):
    return base64.b64encode(json.dumps(record).encode()).decode() if record is not None else ""


def host_read(record=RECORD, raw=None, **state):
    """A host read as torch_backend_host returns it, serving RELEASE on the recorded CPU unless told."""
    host = {"files": {"record": {"signature": "x", "content": raw if raw is not None else content(record)}},
            "cpu_fingerprint": "305b35c0b213a2bb", "active": "active", "served": True, "served_release": RELEASE}
    host.update(state)
    return host


# (id, host read, run: (release id, release ready, run configures), reason to probe: "" or a part of it)
CASES = [
    ("unchanged re-run: the record stands", host_read(), (RELEASE, True, True), ""),
    ("unchanged re-run, NNPACK off: the record stands", host_read(OFF), (RELEASE, True, True), ""),
    ("not_built (the torch build's verdict) stands", host_read(dict(OFF, status="not_built")), (RELEASE, True, True), ""),
    ("a probe-only run always probes", host_read(), (RELEASE, True, False), "a probe-only run always probes"),
    ("a release not built yet: predicted", host_read(), (RELEASE, False, True), "is not built"),
    ("another release (new wheels, service code, models)", host_read(), ("8e1b77aa09c2", True, True),
     "not probed with release 8e1b77aa09c2"),
    ("a record from before probed_release", host_read({k: v for k, v in RECORD.items() if k != "probed_release"}),
     (RELEASE, True, True), "not probed with release"),
    ("no record", host_read(None), (RELEASE, True, True), "there is no CPU record"),
    ("a record that is not JSON", host_read(raw=base64.b64encode(b"{not json").decode()), (RELEASE, True, True),
     "there is no CPU record"),
    ("a record that is not base64", host_read(raw="%%%"), (RELEASE, True, True), "there is no CPU record"),
    ("a record that is a JSON list", host_read(raw=base64.b64encode(b"[1]").decode()), (RELEASE, True, True),
     "there is no CPU record"),
    ("an undecided record (timed out)", host_read(dict(OFF, status="probe_failed", available=None)),
     (RELEASE, True, True), "no verdict of torch's (probe_failed)"),
    ("cpuinfo_failed is the host's state, not torch's verdict", host_read(dict(OFF, status="cpuinfo_failed")),
     (RELEASE, True, True), "no verdict of torch's (cpuinfo_failed)"),
    ("USE_NNPACK not what the verdict gives (edited by hand)", host_read(dict(RECORD, use_nnpack="0")),
     (RELEASE, True, True), "does not follow"),
    ("available as a string is not available", host_read(dict(RECORD, available="true")), (RELEASE, True, True),
     "does not follow"),
    ("the CPU moved (resized or migrated droplet)", host_read(cpu_fingerprint="bbbbbbbbbbbbbbbb"), (RELEASE, True, True),
     "not the one recorded"),
    ("the CPU could not be read", host_read(cpu_fingerprint=""), (RELEASE, True, True), "could not be read"),
    ("the unit failed", host_read(active="failed", served=False, served_release=""), (RELEASE, True, True),
     "does not serve release"),
    ("active but not answering", host_read(served=False, served_release=""), (RELEASE, True, True),
     "does not serve release"),
    ("serving another release (a run cut before its restart)", host_read(served_release="8e1b77aa09c2"),
     (RELEASE, True, True), "does not serve release"),
]


@pytest.mark.parametrize("name, host, run, reason", CASES, ids=[c[0] for c in CASES])
def test_why_probe(name, host, run, reason):
    got = why_probe(host, *run)
    if reason:
        assert reason in got
        assert recorded_decision(host, *run, "web1") == {}
    else:
        assert got == ""


@pytest.mark.parametrize("record", [RECORD, OFF], ids=["on", "off"])
def test_the_recorded_decision_has_the_probes_shape_and_keeps_the_record_byte_for_byte(record):
    got = recorded_decision(host_read(record), RELEASE, True, True, "web1")
    assert set(got) == {"record", "previous", "kept", "cpu_moved", "use_nnpack_off", "predicted", "messages"}
    assert got["record"] == record and got["previous"] == record
    assert (got["kept"], got["cpu_moved"], got["predicted"]) == (False, False, False)
    assert got["use_nnpack_off"] is (record["use_nnpack"] == "0")
    assert got["messages"] == [{"level": "info", "text": (
        "web1: NNPACK %s, as probed with release %s on this CPU (305b35c0b213a2bb); not probed again "
        "(--tags probe probes)" % (record["status"], RELEASE))}]
