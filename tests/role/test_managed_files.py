"""Which managed files a run changes (filter_plugins/managed_files.py): the signature the role
computes for what it renders must be the one the host-state module reads from the file on the
host (library/torch_backend_host.py, file_state), or every re-run would write every file."""
import importlib.util
import os

import pytest

from conftest import ROLE, load_role_module


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FILTER = load("pytorch_backend_managed_files", ROLE / "filter_plugins" / "managed_files.py")
HOST = load_role_module("torch_backend_host")

CONTENTS = ["", "TORCH_BACKEND_PORT=8080\n", "[Unit]\nDescription=é ü\n", "no newline at the end"]


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("mode", ["0644", "0640", "0600"])
def test_rendered_signature_is_what_the_host_read_gives_for_the_written_file(tmp_path, content, mode):
    path = tmp_path / "managed"
    path.write_text(content, encoding="utf-8")
    os.chown(path, 0, 0)
    os.chmod(path, int(mode, 8))
    assert FILTER.signature(content, "root", mode) == HOST.file_state(str(path))["signature"]


def test_changed_files_marks_what_differs_in_content_owner_or_mode_and_what_is_missing(tmp_path):
    files = [{"key": k, "content": "x\n", "group": "root", "mode": "0644"} for k in ("same", "content", "mode", "missing")]
    host = {"same": {"signature": FILTER.signature("x\n", "root", "0644")},
            "content": {"signature": FILTER.signature("y\n", "root", "0644")},
            "mode": {"signature": FILTER.signature("x\n", "root", "0600")},
            "missing": {"signature": ""}}
    marked = FILTER.changed_files(files, host)
    assert {f["key"]: f["changed"] for f in marked} == {"same": False, "content": True, "mode": True, "missing": True}
    # a key the host read knows nothing of (a unit a newer role adds) is a file to write
    assert FILTER.changed_files([dict(files[0], key="new")], host)[0]["changed"] is True
