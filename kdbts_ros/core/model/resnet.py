"""ResNet encoders with torchvision's module names, so official state dicts load unchanged.

torchvision's ops fail to load with the CPU torch wheel used here, so the
architecture is written out; it follows torchvision's layout exactly
(``conv1``, ``bn1``, ``layer1..4``, ``fc``, ``downsample.0/1``).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with identity shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck with stride on the 3x3 (torchvision v1.5, ResNet-50)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# name: (block, blocks per stage, stem width); the stage widths are 1, 2, 4, 8 times the stem's.
# "resnet18_half" is not a torchvision model: a half-width ResNet-18 small enough (4x fewer
# weights, ~3x faster) to train on a CPU and to ship inside the package.
_LAYOUTS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int], int]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), 64),
    "resnet34": (BasicBlock, (3, 4, 6, 3), 64),
    "resnet50": (Bottleneck, (3, 4, 6, 3), 64),
    "resnet18_half": (BasicBlock, (2, 2, 2, 2), 32),
}
BACKBONES = tuple(_LAYOUTS)


class ResNet(nn.Module):
    """torchvision-compatible ResNet; ``fc`` is kept so official checkpoints load strictly."""

    def __init__(self, name: str):
        super().__init__()
        if name not in _LAYOUTS:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(_LAYOUTS)}")
        block, counts, stem = _LAYOUTS[name]
        widths = (stem, 2 * stem, 4 * stem, 8 * stem)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = stem
        layers = []
        for i, (width, count) in enumerate(zip(widths, counts)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != width * block.expansion:
                down = nn.Sequential(
                    nn.Conv2d(cin, width * block.expansion, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(width * block.expansion),
                )
            blocks = [block(cin, width, stride, down)]
            cin = width * block.expansion
            blocks += [block(cin, width) for _ in range(count - 1)]
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, 1000)
        self.channels = [stem] + [w * block.expansion for w in widths]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ResnetEncoder(nn.Module):
    """Monodepth2 encoder: five feature levels from H/2 to H/32.

    Input is RGB in [0, 1]; it is normalised with (x - 0.45) / 0.225 as the
    official code does (not ImageNet mean/std).
    """

    def __init__(self, name: str):
        super().__init__()
        self.encoder = ResNet(name)
        self.num_ch_enc = self.encoder.channels

    def forward(self, image01: torch.Tensor) -> list[torch.Tensor]:
        e = self.encoder
        x = (image01 - 0.45) / 0.225
        f0 = e.relu(e.bn1(e.conv1(x)))
        f1 = e.layer1(e.maxpool(f0))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        return [f0, f1, f2, f3, e.layer4(f3)]
