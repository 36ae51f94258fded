"""Models from TORCH_BACKEND_MODEL_DIR: refusals that must stop the service."""

import json
import socket
import subprocess
import sys

import pytest

from conftest import ServerProcess, run_service, service_env, write_slow_model

pytestmark = pytest.mark.slow


def test_exported_metadata(resnet_dir):
    from torch_backend.models import sha256_file

    meta = json.loads((resnet_dir / "resnet18.json").read_text())
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]
    assert meta["sha256"] == sha256_file(str(resnet_dir / "resnet18.pt"))


def test_export_is_deterministic(resnet_dir, tmp_path):
    # The role may re-export on every run: same bytes = no change, no restart.
    proc = subprocess.run([sys.executable, "-m", "torch_backend", "export-resnet18", str(tmp_path),
                           "--name", "again"], env=service_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (json.loads((tmp_path / "again.json").read_text())["sha256"]
            == json.loads((resnet_dir / "resnet18.json").read_text())["sha256"])
    assert not list(tmp_path.glob("*.tmp"))


def test_checksum_mismatch_refuses_to_start(tmp_path):
    write_slow_model(tmp_path / "models", name="tampered", sha256="0" * 64)
    rc, stderr = run_service({"TORCH_BACKEND_MODEL_DIR": str(tmp_path / "models")}, tmp_path)
    assert rc == 3, stderr
    assert "model 'tampered'" in stderr and "sha256 mismatch" in stderr
    assert "ready:" not in stderr


@pytest.mark.parametrize("case", ["corrupt .pt", "missing .pt", "missing .json", "bad metadata",
                                  "reserved name"])
def test_broken_model_dir_refuses_to_start(tmp_path, case):
    models = tmp_path / "models"
    models.mkdir()
    meta = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]}
    if case == "corrupt .pt":
        (models / "m.pt").write_bytes(b"PK\x03\x04 not a model")
        (models / "m.json").write_text(json.dumps(meta))
        expect = "cannot load TorchScript"
    elif case == "missing .pt":
        (models / "m.json").write_text(json.dumps(meta))
        expect = "m.pt is missing"
    elif case == "missing .json":
        write_slow_model(models, name="m")
        (models / "m.json").unlink()
        expect = "m.json is missing"
    elif case == "bad metadata":
        write_slow_model(models, name="m")
        (models / "m.json").write_text(json.dumps(dict(meta, inputs=[{"name": "x"}])))
        expect = "datatype"
    else:
        write_slow_model(models, name="conv2d-selftest")
        expect = "reserved"
    rc, stderr = run_service({"TORCH_BACKEND_MODEL_DIR": str(models)}, tmp_path)
    assert rc == 3, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 1 and expect in errors[0], stderr


def test_warm_up_failure_refuses_to_start(tmp_path):
    # Metadata that lies about the input shape: the warm-up inference fails.
    write_slow_model(tmp_path / "models", name="liar")
    meta_path = tmp_path / "models" / "liar.json"
    meta = json.loads(meta_path.read_text())
    meta["inputs"][0]["shape"] = [-1]
    meta_path.write_text(json.dumps(meta))
    rc, stderr = run_service({"TORCH_BACKEND_MODEL_DIR": str(tmp_path / "models")}, tmp_path)
    assert rc == 3 and "model 'liar': warm-up inference failed" in stderr, stderr


def test_port_in_use_exits_nonzero(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        rc, stderr = run_service({"TORCH_BACKEND_PORT": str(busy.getsockname()[1])}, tmp_path)
    assert rc == 4 and "cannot listen" in stderr, stderr


def test_missing_model_dir_serves_builtins(tmp_path):
    srv = ServerProcess(tmp_path, {"TORCH_BACKEND_MODEL_DIR": str(tmp_path / "absent")}).start()
    try:
        srv.wait_ready()
        status, body = srv.get_json("/v2/models/conv2d-selftest/ready")
        assert status == 200
        assert "serving built-in models only" in srv.stderr
        assert srv.terminate() == 0
    finally:
        srv.kill()
