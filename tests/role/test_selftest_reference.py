"""The controller's pure-Python reference agrees with torch's Conv2d on the same definition."""
import importlib.util

import torch

from conftest import ROLE

spec = importlib.util.spec_from_file_location("selftest", ROLE / "filter_plugins" / "selftest.py")
selftest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(selftest)


def torch_conv(batch):
    conv = torch.nn.Conv2d(1, 2, kernel_size=3, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(selftest.WEIGHTS, dtype=torch.float32).unsqueeze(1))
        conv.bias.copy_(torch.tensor(selftest.BIAS))
        return conv(torch.tensor(batch, dtype=torch.float32)).flatten().tolist()


def test_documented_input():
    x = selftest.selftest_input(8)
    assert len(x) == 1 and len(x[0]) == 1 and len(x[0][0]) == 8 and len(x[0][0][0]) == 8
    assert x[0][0][2][3] == ((3 * 2 + 5 * 3) % 11) - 5


def test_reference_equals_torch_exactly():
    x = selftest.selftest_input(8)
    assert selftest.conv2d_reference(x) == torch_conv(x)


def test_reference_detects_a_wrong_answer():
    x = selftest.selftest_input(8)
    wrong = torch_conv([[[[v + (1 if (i, j) == (4, 4) else 0) for j, v in enumerate(row)]
                          for i, row in enumerate(x[0][0])]]])
    assert selftest.conv2d_reference(x) != wrong
