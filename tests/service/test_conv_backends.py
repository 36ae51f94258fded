"""Which backend each Conv2d layer runs on: in-process on scripted models, and through the
real service (GET /v2/models/{name} and GET /v2), compared with what
torch._C._select_conv_backend answers in this test process for the same layer and flags."""

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import ServerProcess
from torch_backend import conv_backends, models, selftest

# (in_channels, out_channels, kernel, stride, padding) in order, on a [B, 3, 64, 64] input:
# sized so that oneDNN takes every layer at batch 1 here (kernels over 3x3, or inputs over
# oneDNN's small-input threshold), so turning oneDNN off shows as a flip to Slow2d.
LAYERS = ((3, 16, 7, 2, 3), (16, 32, 5, 1, 2), (32, 32, 3, 1, 1))
INPUT = [-1, 3, 64, 64]


class Convs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.convs = torch.nn.ModuleList()
        for cin, cout, k, s, p in LAYERS:
            conv = torch.nn.Conv2d(cin, cout, k, stride=s, padding=p)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
            self.convs.append(conv)

    def forward(self, x):
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x.mean(dim=(2, 3))


def write_convs_model(directory, name="convs"):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pt = directory / f"{name}.pt"
    torch.jit.save(torch.jit.script(Convs().eval()), str(pt))
    (directory / f"{name}.json").write_text(json.dumps({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": INPUT}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 32]}]}))
    return pt


def expected_backends(batch, mkldnn=True, nnpack=None):
    """What torch answers here for each layer of Convs at `batch`, asked directly."""
    model = Convs().eval()
    x = torch.zeros([batch] + INPUT[1:])
    out = []
    nnpack = torch._C._get_nnpack_enabled() if nnpack is None else nnpack
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=mkldnn), \
            torch.backends.nnpack.flags(enabled=nnpack):
        for conv in model.convs:
            out.append(torch._C._select_conv_backend(
                x, conv.weight, conv.bias, list(conv.stride), list(conv.padding),
                list(conv.dilation), False, [0, 0], conv.groups, None).name)
            x = conv(x)
    return out


def test_each_layer_is_asked_with_its_real_input_shape():
    report = conv_backends.of_model(torch.jit.script(Convs().eval()), [torch.zeros(1, 3, 64, 64)])
    assert [layer["input"] for layer in report["layers"]] == [[1, 3, 64, 64], [1, 16, 32, 32],
                                                              [1, 32, 32, 32]]
    assert [layer["weight"][2:] for layer in report["layers"]] == [[7, 7], [5, 5], [3, 3]]
    assert [layer["batch_1"] for layer in report["layers"]] == expected_backends(1)
    assert [layer["batch_16"] for layer in report["layers"]] == expected_backends(16)
    assert report["batch_1"] == {"Mkldnn": 3} and report["slow2d"] is False


def test_onednn_off_falls_to_slow2d_at_batch_1():
    with torch.backends.mkldnn.flags(enabled=False):
        report = conv_backends.of_model(torch.jit.script(Convs().eval()),
                                        [torch.zeros(1, 3, 64, 64)])
    assert report["mkldnn_enabled"] is False
    assert report["batch_1"] == {"Slow2d": 3} and report["slow2d"] is True
    assert [layer["batch_16"] for layer in report["layers"]] == expected_backends(16, mkldnn=False)


def test_the_builtin_selftest_is_slow2d_at_batch_1_but_never_flags_the_host():
    model = models.builtin_models()[0]
    report = model.measure_conv_backends()
    assert report["batch_1"] == {"Slow2d": 1}, report   # declined by oneDNN on purpose
    summary = conv_backends.host_summary([model])
    assert summary["models"][selftest.MODEL_NAME]["builtin"] is True
    assert summary["slow2d"] == []


def test_control_flow_and_no_conv_layers():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 5)

        def forward(self, x):
            if x.sum() > 1e9:
                return x.mean(dim=(1, 2, 3))
            return self.conv(x).mean(dim=(1, 2, 3))

    report = conv_backends.of_model(torch.jit.script(Branchy()), [torch.zeros(1, 3, 32, 32)])
    assert len(report["layers"]) == 1
    flat = conv_backends.of_model(torch.jit.script(torch.nn.Linear(4, 2)), [torch.zeros(1, 4)])
    assert flat["layers"] == [] and conv_backends.describe(flat) == "no Conv2d layers"


# --- through the real service ---------------------------------------------------------

# Runs the service with oneDNN turned off in its own process before anything else: a real
# start-up, only the flag differs. (argv: -c PYTHON -m torch_backend serve)
MKLDNN_OFF = (sys.executable, "-c",
              "import runpy, sys, torch; torch._C._set_mkldnn_enabled(False); "
              "sys.argv = ['torch_backend'] + sys.argv[4:]; "
              "runpy.run_module('torch_backend', run_name='__main__', alter_sys=True)")


def serve(tmp_path, name, wrapper=()):
    model_dir = tmp_path / "models"
    if not model_dir.exists():
        write_convs_model(model_dir)
    # USE_NNPACK=1: the flag as a deploy leaves it on a host where NNPACK works, no probe
    srv = ServerProcess(tmp_path, {"TORCH_BACKEND_MODEL_DIR": str(model_dir), "USE_NNPACK": "1"},
                        wrapper=wrapper, name=name).start()
    try:
        srv.wait_ready()
        return srv.get_json("/v2/models/convs")[1], srv.get_json("/v2")[1], srv.stderr
    finally:
        assert srv.terminate() == 0, srv.stderr


@pytest.mark.slow
def test_service_reports_the_backends_torch_selects_and_the_onednn_off_flip(tmp_path):
    meta, server, stderr = serve(tmp_path, "default")
    report = meta["conv_backends"]
    assert report["mkldnn_enabled"] is True and report["nnpack_enabled"] is True
    assert [layer["batch_1"] for layer in report["layers"]] == expected_backends(1, nnpack=True)
    assert [layer["batch_16"] for layer in report["layers"]] == expected_backends(16, nnpack=True)
    summary = server["conv_backends"]
    assert summary["models"]["convs"]["batch_1"] == report["batch_1"]
    assert summary["models"]["convs"]["builtin"] is False and summary["slow2d"] == []
    assert "model convs conv backends (mkldnn=on nnpack=on): batch 1: Mkldnn x3" in stderr

    meta, server, stderr = serve(tmp_path, "mkldnn-off", MKLDNN_OFF)
    report = meta["conv_backends"]
    assert report["mkldnn_enabled"] is False
    assert [layer["batch_1"] for layer in report["layers"]] == ["Slow2d"] * 3
    assert [layer["batch_16"] for layer in report["layers"]] == expected_backends(
        16, mkldnn=False, nnpack=True)
    assert server["conv_backends"]["slow2d"] == ["convs"]
    assert "WARNING torch_backend" in stderr and "model convs: Conv2d layers fall to the slow " \
        "direct path (Slow2d)" in stderr
