"""Network builders: a compact built-in ResNet (CPU-trainable) and any timm model when timm is there."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["UInt8Wrapper", "build_net", "export_onnx", "to_gray"]

#: ITU-R BT.601 luma weights (R, G, B)
LUMA = (0.299, 0.587, 0.114)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luminance of (B,3,H,W) RGB, repeated on the three channels (a stain-blind input: the network
    sees brightness and texture, not hue)."""
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand(-1, 3, -1, -1)


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

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier head."""
        return self.head[:2](self.body(self.stem(x)))

    def classify(self, emb: torch.Tensor) -> torch.Tensor:
        return self.head[2:](emb)


_BUILTIN = {
    "lm-resnet-s": dict(widths=(32, 64, 128, 256), blocks=(1, 2, 2, 1)),
    "lm-resnet-m": dict(widths=(48, 96, 192, 384), blocks=(1, 2, 2, 2)),
}


def build_net(arch: str, num_classes: int, size: int | None = None) -> nn.Module:
    """``lm-resnet-s`` / ``lm-resnet-m`` (built in) or ``timm:<name>`` (needs timm, trained from scratch).

    ``size``: the input side in pixels, for timm models built for one size (vision transformers:
    their position embedding is made for ``size``); convolutional networks ignore it.
    """
    if arch in _BUILTIN:
        return SmallResNet(num_classes, **_BUILTIN[arch])
    if arch.startswith("timm:"):
        try:
            import timm
        except ImportError as exc:
            raise ConfigError(f"arch {arch!r} needs timm (pip install 'leukomorph[train]')") from exc
        if size is not None:
            try:
                return timm.create_model(arch[5:], pretrained=False, num_classes=num_classes, img_size=size)
            except TypeError:  # a model without a fixed input size
                pass
        return timm.create_model(arch[5:], pretrained=False, num_classes=num_classes)
    raise ConfigError(f"unknown arch {arch!r}; choose one of {sorted(_BUILTIN)} or timm:<name>")


class UInt8Wrapper(nn.Module):
    """Export wrapper: uint8 NHWC RGB in, calibrated class probabilities out.

    Normalisation and temperature scaling live inside the graph, so the ONNX file's contract is
    simply "prepared crops as uint8". With ``with_embedding`` a second output carries the pooled
    features before the head (for patient-level multiple-instance models).
    """

    def __init__(
        self,
        net: nn.Module,
        mean,
        std,
        temperature: float = 1.0,
        with_embedding: bool = False,
        grayscale: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.grayscale = grayscale
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("inv_t", torch.tensor(1.0 / temperature, dtype=torch.float32))
        self.with_embedding = with_embedding

    def forward(self, x: torch.Tensor):
        x = x.permute(0, 3, 1, 2).float()
        if self.grayscale:
            x = to_gray(x)
        x = (x - self.mean) / self.std
        if not self.with_embedding:
            return torch.softmax(self.net(x) * self.inv_t, dim=1)
        emb = _embed(self.net, x)
        return torch.softmax(_classify(self.net, emb) * self.inv_t, dim=1), emb


def _embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if hasattr(net, "embed"):
        return net.embed(x)
    return net.forward_head(net.forward_features(x), pre_logits=True)  # timm


def _classify(net: nn.Module, emb: torch.Tensor) -> torch.Tensor:
    if hasattr(net, "classify"):
        return net.classify(emb)
    return net.get_classifier()(emb)  # timm


def export_onnx(
    net: nn.Module,
    path,
    size: int,
    mean,
    std,
    temperature: float,
    with_embedding: bool = True,
    grayscale: bool = False,
) -> None:
    """Export ``net`` (eval mode, CPU) as uint8 NHWC → probabilities [, embedding] ONNX, opset 17.
    ``grayscale``: the graph reduces its RGB input to luminance first (:func:`to_gray`)."""
    wrapper = UInt8Wrapper(net.cpu().eval(), mean, std, temperature, with_embedding, grayscale).eval()
    outputs = ["probabilities", "embedding"] if with_embedding else ["probabilities"]
    _export_uint8(wrapper, path, size, outputs, {"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}})


def _export_uint8(wrapper: nn.Module, path, size: int, outputs: list[str], dynamic_axes: dict) -> None:
    """torch → ONNX (opset 17, TorchScript exporter) with one uint8 NHWC input named ``image``."""
    torch.onnx.export(
        wrapper,
        (torch.zeros(1, size, size, 3, dtype=torch.uint8),),
        str(path),
        input_names=["image"],
        output_names=outputs,
        dynamic_axes=dynamic_axes,
        opset_version=17,
        dynamo=False,
    )


class DenseUInt8Wrapper(nn.Module):
    """uint8 NHWC RGB in, normalised inside the graph, then the dense-prediction ``net`` and a
    fixed output transform: ``"softmax"`` over channels (segmentation) or ``"sigmoid_first"`` (the
    first of two outputs through a sigmoid: a detector's heat maps beside its regression maps)."""

    def __init__(self, net: nn.Module, mean, std, post: str) -> None:
        super().__init__()
        self.net = net
        self.post = post
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor):
        out = self.net((x.permute(0, 3, 1, 2).float() - self.mean) / self.std)
        if self.post == "softmax":
            return torch.softmax(out, 1)
        first, *rest = out
        return (torch.sigmoid(first), *rest)


def export_dense_onnx(
    net: nn.Module, path, size: int, mean, std, outputs: list[str], post: str, any_size: bool = False
) -> None:
    """Export a segmentation or detection ``net`` as uint8 NHWC ONNX (opset 17); ``any_size``:
    height and width are dynamic as well as the batch."""
    wrapper = DenseUInt8Wrapper(net.cpu().eval(), mean, std, post).eval()
    image_axes = {0: "batch", 1: "height", 2: "width"} if any_size else {0: "batch"}
    out_axes = {0: "batch", 2: "h", 3: "w"} if any_size else {0: "batch"}
    _export_uint8(wrapper, path, size, outputs, {"image": image_axes, **{o: out_axes for o in outputs}})
