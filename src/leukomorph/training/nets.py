"""Network builders: a compact built-in ResNet (CPU-trainable) and any timm model when timm is there."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["UInt8Wrapper", "build_net"]


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + self.short(x))


class SmallResNet(nn.Module):
    """ResNet with a stride-2 stem and basic blocks; sized for 64-128 px crops."""

    def __init__(self, num_classes: int, widths=(32, 64, 128, 256), blocks=(1, 2, 2, 1), drop: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        layers = []
        cin = widths[0]
        for w, n in zip(widths, blocks, strict=True):
            for i in range(n):
                layers.append(_Basic(cin, w, 2 if i == 0 else 1))
                cin = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))


_BUILTIN = {
    "lm-resnet-s": dict(widths=(32, 64, 128, 256), blocks=(1, 2, 2, 1)),
    "lm-resnet-m": dict(widths=(48, 96, 192, 384), blocks=(1, 2, 2, 2)),
}


def build_net(arch: str, num_classes: int) -> nn.Module:
    """``lm-resnet-s`` / ``lm-resnet-m`` (built in) or ``timm:<name>`` (needs timm, trained from scratch)."""
    if arch in _BUILTIN:
        return SmallResNet(num_classes, **_BUILTIN[arch])
    if arch.startswith("timm:"):
        try:
            import timm
        except ImportError as exc:
            raise ConfigError(f"arch {arch!r} needs timm (pip install 'leukomorph[train]')") from exc
        return timm.create_model(arch[5:], pretrained=False, num_classes=num_classes)
    raise ConfigError(f"unknown arch {arch!r}; choose one of {sorted(_BUILTIN)} or timm:<name>")


class UInt8Wrapper(nn.Module):
    """Export wrapper: uint8 NHWC RGB in, calibrated class probabilities out.

    Normalisation and temperature scaling live inside the graph, so the ONNX file's contract is
    simply "prepared crops as uint8".
    """

    def __init__(self, net: nn.Module, mean, std, temperature: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("inv_t", torch.tensor(1.0 / temperature, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        return torch.softmax(self.net(x) * self.inv_t, dim=1)
