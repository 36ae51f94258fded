"""Which backend each Conv2d layer runs on: in-process on scripted models (recorded by the
model's own warm-up, models.Model.warm_up), and through the real service (GET
/v2/models/{name} and GET /v2), compared with what torch._C._select_conv_backend answers in
this test process for the same layer and flags. The recording adds no forward pass and leaves
the warm-up counting as the TorchScript profiling executor's run."""

import io
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


def warmed(module, input_shape, output_shape, name="convs"):
    """A Model of `module` after its warm-up (the start-up's pass, recording the backends)."""
    model = models.Model(name, module, [models.TensorSpec("x", "FP32", tuple(input_shape))],
                         [models.TensorSpec("y", "FP32", tuple(output_shape))], "test")
    model.warm_up()
    return model


def report_of(module, input_shape=INPUT, output_shape=(-1, 32)):
    return warmed(module, input_shape, output_shape).conv_backends


def test_each_layer_is_asked_with_its_real_input_shape():
    report = report_of(torch.jit.script(Convs().eval()))
    assert [layer["input"] for layer in report["layers"]] == [[1, 3, 64, 64], [1, 16, 32, 32],
                                                              [1, 32, 32, 32]]
    assert [layer["weight"][2:] for layer in report["layers"]] == [[7, 7], [5, 5], [3, 3]]
    assert [layer["batch_1"] for layer in report["layers"]] == expected_backends(1)
    assert [layer["batch_16"] for layer in report["layers"]] == expected_backends(16)
    assert report["batch_1"] == {"Mkldnn": 3} and report["slow2d"] is False


def test_onednn_off_falls_to_slow2d_at_batch_1():
    with torch.backends.mkldnn.flags(enabled=False):
        report = report_of(torch.jit.script(Convs().eval()))
    assert report["mkldnn_enabled"] is False
    assert report["batch_1"] == {"Slow2d": 3} and report["slow2d"] is True
    assert [layer["batch_16"] for layer in report["layers"]] == expected_backends(16, mkldnn=False)


def test_the_builtin_selftest_is_slow2d_at_batch_1_but_never_flags_the_host():
    model = models.builtin_models()[0]
    model.warm_up()
    report = model.conv_backends
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

    report = report_of(torch.jit.script(Branchy()), [-1, 3, 32, 32], [-1])
    assert len(report["layers"]) == 1
    flat = report_of(torch.jit.script(torch.nn.Linear(4, 2)), [-1, 4], [-1, 2])
    assert flat["layers"] == [] and conv_backends.describe(flat) == "no Conv2d layers"


def test_string_padding_and_traced_models_are_seen_too():
    # padding="same" reaches the mode as aten.conv2d.padding -> aten._convolution_mode under
    # inference mode; a traced model calls aten._convolution itself
    class Same(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 5, padding="same")
            self.b = torch.nn.Conv2d(8, 8, 4, padding="same")   # even kernel: padded apart

        def forward(self, x):
            return self.b(self.a(x)).mean(dim=(1, 2, 3))

    report = report_of(torch.jit.script(Same().eval()), [-1, 3, 32, 32], [-1])
    assert [layer["weight"][2:] for layer in report["layers"]] == [[5, 5], [4, 4]], report
    traced = torch.jit.trace(Convs().eval(), torch.zeros(1, 3, 64, 64))
    assert "aten::_convolution" in str(traced.inlined_graph)
    report = report_of(traced)
    assert [layer["batch_1"] for layer in report["layers"]] == expected_backends(1)


class Counting:
    """Counts the calls of the module it wraps (Model calls its module once per pass)."""

    def __init__(self, module):
        self.module, self.calls = module, 0

    def __call__(self, *args):
        self.calls += 1
        return self.module(*args)


def loaded_convs():
    """Convs as the service gets a model, torch.jit.load: its own TorchScript executor (scripted
    modules of one class share theirs, so another test's runs would count)."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Convs().eval()), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def test_the_warm_up_is_the_only_pass_and_still_counts_as_the_profiled_run():
    model = warmed(Counting(loaded_convs()), INPUT, (-1, 32))
    assert model.module.calls == 1                      # no pass of its own for the report
    assert len(model.conv_backends["layers"]) == 3
    # The profiling executor profiles the first run, optimizes on the next: after a warm-up
    # under the recorder, the first request runs the optimized graph, as after a plain one.
    model.run(model.warm_up_arrays())
    assert "prim::profile" not in str(torch.jit.last_executed_optimized_graph())
    cold = models.Model("cold", loaded_convs(), model.inputs, model.outputs, "test")
    cold.run(cold.warm_up_arrays())                     # no warm-up: the first run profiles
    assert "prim::profile" in str(torch.jit.last_executed_optimized_graph())


def test_a_failing_backend_query_costs_the_report_not_the_start_mocked_select(monkeypatch):
    # torch._C._select_conv_backend cannot be made to fail for real: replaced by one that raises
    def broken(*args):
        raise RuntimeError("no answer")

    monkeypatch.setattr(conv_backends, "_backend", broken)
    model = warmed(torch.jit.script(Convs().eval()), INPUT, (-1, 32))
    assert model.conv_backends == {"error": "RuntimeError: no answer"}
    assert conv_backends.describe(model.conv_backends) == "unknown (RuntimeError: no answer)"


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


class CountsCalls(torch.nn.Module):
    """Counts its forward passes in a buffer and returns the count: what the service ran."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 5)
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        self.calls.add_(1)
        return self.conv(x).mean(dim=(1, 2, 3)), self.calls.clone()


@pytest.mark.slow
def test_service_start_runs_one_pass_per_model_the_warm_up(tmp_path):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    torch.jit.save(torch.jit.script(CountsCalls().eval()), str(model_dir / "counted.pt"))
    (model_dir / "counted.json").write_text(json.dumps({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]},
                    {"name": "calls", "datatype": "FP32", "shape": [1]}]}))
    srv = ServerProcess(tmp_path, {"TORCH_BACKEND_MODEL_DIR": str(model_dir), "USE_NNPACK": "1"},
                        name="counted").start()
    try:
        srv.wait_ready()
        assert len(srv.get_json("/v2/models/counted")[1]["conv_backends"]["layers"]) == 1
        status, _, body = srv.infer("counted", {"inputs": [
            {"name": "x", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}]})
        assert status == 200, body[:200]
        calls = {o["name"]: o["data"] for o in json.loads(body)["outputs"]}["calls"]
        assert calls == [2.0], "passes before this request: %s" % (calls[0] - 1)  # warm-up + it
    finally:
        assert srv.terminate() == 0, srv.stderr
