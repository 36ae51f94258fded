"""A ResNet-18-shaped network built in code, and its TorchScript export.

Same layer shapes as torchvision's resnet18 (so the same compute cost), with
random weights from a fixed seed: it is for benchmarks and deployment tests,
not for predictions. Built here so nothing is downloaded, ever.
"""

from __future__ import annotations

import io
import json
import os

NAME = "resnet18"
INPUT_SHAPE = [-1, 3, 224, 224]
OUTPUT_SHAPE = [-1, 1000]
SEED = 20240601


def build(seed: int = SEED):
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = nn.Identity()
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.downsample(x))

    class ResNet18(nn.Module):
        def __init__(self, num_classes: int = 1000):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            layers = []
            cin = 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers.append(nn.Sequential(BasicBlock(cin, cout, stride),
                                            BasicBlock(cout, cout, 1)))
                cin = cout
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = ResNet18().eval()
    finally:
        torch.random.set_rng_state(generator_state)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def export(directory: str, name: str = NAME) -> tuple:
    """Write NAME.pt (TorchScript) and NAME.json (metadata with sha256).

    Files are written under temporary names and renamed, so a service
    starting meanwhile never sees half a model. The bytes are deterministic
    for a given torch version (whatever the name or directory), so
    re-exporting changes nothing.
    """
    import torch

    from .models import sha256_file

    os.makedirs(directory, exist_ok=True)
    pt_path = os.path.join(directory, name + ".pt")
    json_path = os.path.join(directory, name + ".json")
    # Serialize to memory first: a file name would end up inside the zip
    # archive, and the bytes (so the sha256) should depend on the model only.
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(build()), buffer)
    tmp_pt = pt_path + ".tmp"
    with open(tmp_pt, "wb") as f:
        f.write(buffer.getbuffer())
    meta = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": INPUT_SHAPE}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": OUTPUT_SHAPE}],
        "sha256": sha256_file(tmp_pt),
    }
    tmp_json = json_path + ".tmp"
    with open(tmp_json, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    os.replace(tmp_pt, pt_path)
    os.replace(tmp_json, json_path)
    return pt_path, json_path
