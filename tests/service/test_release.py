"""Which release a process serves: resolved once at start-up from sys.prefix (issue 12).

Pure tests of torch_backend.release.resolve on tmp dirs shaped like the role's
/opt/torch-backend/{releases/<id>/venv, current}, then one real server started
through `current/venv/bin/python` whose `current` is switched while it runs: it
must keep reporting the release it started from, as must /metrics.
"""

import json
import os
import re

import pytest

from conftest import ServerProcess, make_release, point_current
from torch_backend import release

R1, R2 = "3f9c0a1b2d4e", "a1b2c3d4e5f6"


def fake_release(base, release_id, complete=None):
    """BASE/releases/ID/venv as a plain directory (resolve() never runs it)."""
    directory = base / "releases" / release_id
    (directory / "venv").mkdir(parents=True)
    if complete is not None:
        text = complete if isinstance(complete, str) else json.dumps(complete)
        (directory / ".complete").write_text(text)
    return directory


def test_release_from_complete_marker(tmp_path):
    directory = fake_release(tmp_path, R1, {"release": R1, "runtime": "cpython-3.11"})
    assert release.resolve(str(directory / "venv")) == R1


def test_complete_marker_wins_over_directory_name(tmp_path):
    directory = fake_release(tmp_path, "renamed", {"release": R1, "runtime": "x"})
    assert release.resolve(str(directory / "venv")) == R1


def test_release_from_directory_name_without_complete(tmp_path):
    directory = fake_release(tmp_path, R1)
    assert release.resolve(str(directory / "venv")) == R1


@pytest.mark.parametrize("marker", ["", "not json", "[1, 2]", '"abc"', "{}", '{"release": 12}',
                                    '{"release": ""}', '{"release": null}', b"\xff\xfe"],
                         ids=["empty", "not-json", "list", "string", "no-release", "int",
                              "empty-release", "null-release", "not-utf8"])
def test_unusable_complete_marker_falls_back_to_directory_name(tmp_path, marker):
    directory = fake_release(tmp_path, R1)
    path = directory / ".complete"
    if isinstance(marker, bytes):
        path.write_bytes(marker)
    else:
        path.write_text(marker)
    assert release.resolve(str(directory / "venv")) == R1


def test_plain_prefix_is_no_release(tmp_path):
    (tmp_path / "venv").mkdir()
    assert release.resolve(str(tmp_path / "venv")) is None
    assert release.resolve(str(tmp_path / "does-not-exist" / "venv")) is None
    assert release.resolve("/") is None


def test_plain_prefix_with_complete_marker(tmp_path):
    (tmp_path / "venv").mkdir()
    (tmp_path / ".complete").write_text(json.dumps({"release": R1}))
    assert release.resolve(str(tmp_path / "venv")) == R1


def test_current_symlink_is_resolved(tmp_path):
    fake_release(tmp_path, R1, {"release": R1})
    fake_release(tmp_path, R2)
    current = point_current(tmp_path, R1)
    assert release.resolve(str(current / "venv")) == R1
    # The same path names another release after a switch: hence resolve once, at start-up.
    point_current(tmp_path, R2)
    assert release.resolve(str(current / "venv")) == R2


def test_symlinked_venv_resolves_to_its_target(tmp_path):
    directory = fake_release(tmp_path, R1)
    (tmp_path / "venv-link").symlink_to(directory / "venv")
    assert release.resolve(str(tmp_path / "venv-link")) == R1


# --- a real server started through `current` ---------------------------------------------

@pytest.mark.slow
def test_server_keeps_reporting_its_start_up_release_after_current_is_switched(tmp_path):
    make_release(tmp_path, R1)
    make_release(tmp_path, R2, complete=False)
    current = point_current(tmp_path, R1)
    srv = ServerProcess(tmp_path / "run", {"TORCH_BACKEND_CONFIG_DIGEST": "feedfacecafebeef"},
                        python=current / "venv" / "bin" / "python").start()
    try:
        srv.wait_ready()
        status, meta = srv.get_json("/v2")
        assert status == 200
        assert (meta["release"], meta["config_digest"]) == (R1, "feedfacecafebeef")
        line = [ln for ln in srv.stderr.splitlines() if "starting torch-backend" in ln][0]
        assert f"release={R1} config_digest=feedfacecafebeef " in line, line

        point_current(tmp_path, R2)
        assert os.path.realpath(current) == str(tmp_path / "releases" / R2)
        status, meta = srv.get_json("/v2")
        assert status == 200 and meta["release"] == R1, meta
        assert re.search(rf'^torch_backend_build_info\{{config_digest="feedfacecafebeef",'
                         rf'release="{R1}",version="0\.1\.0"\}} 1\.0$', srv.metrics(), re.M)
        assert srv.terminate() == 0, srv.stderr
    finally:
        srv.kill()
