"""Train a small U-Net for nucleus / cytoplasm segmentation of single-cell crops (seg_wbc).

Input contract (as for the classifier): uint8 NHWC RGB at ``size``×``size`` (the whole crop
resized), normalisation inside the ONNX graph; output: per-pixel probabilities of background,
cytoplasm, nucleus (N, 3, S, S). Split: per domain, by near-duplicate cluster, stratified, seeded;
written to ``split.csv`` beside the model.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import jsonio
from ..data import data_root, dhash, near_duplicate_groups, split_groups
from ..io import read_image
from ..segment.metrics import dice_scores
from .nets import export_dense_onnx
from .train import MEAN, STD  # the classifier's stain statistics: one normalisation for both models

log = logging.getLogger(__name__)

__all__ = ["SegConfig", "SmallUNet", "train_segmenter"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallUNet(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128), n_out: int = 3) -> None:
        super().__init__()
        self.enc = nn.ModuleList()
        cin = 3
        for w in widths:
            self.enc.append(_block(cin, w))
            cin = w
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            self.dec.append(_block(2 * w, w))
            cin = w
        self.head = nn.Conv2d(cin, n_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, e in enumerate(self.enc):
            x = e(x)
            if i < len(self.enc) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, dec in zip(self.up, self.dec, strict=True):
            x = up(x)
            x = dec(torch.cat([x, skips.pop()], 1))
        return self.head(x)


@dataclass
class SegConfig:
    size: int = 128
    epochs: int = 60
    batch_size: int = 16
    lr: float = 2e-3
    test_fraction: float = 0.3
    seed: int = 0
    threads: int = 0


def mask_to_labels(mask_rgb: np.ndarray) -> np.ndarray:
    """seg_wbc mask (0 / 128 / 255 grey) → labels 0 background, 1 cytoplasm, 2 nucleus."""
    g = mask_rgb[..., 0] if mask_rgb.ndim == 3 else mask_rgb
    return np.where(g > 191, 2, np.where(g > 63, 1, 0)).astype(np.uint8)


def _load(rows, base: Path, size: int):
    xs, ys = [], []
    for r in rows:
        img = read_image(base / r["image"]).pixels
        lab = mask_to_labels(read_image(base / r["mask"]).pixels)
        xs.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
        ys.append(cv2.resize(lab, (size, size), interpolation=cv2.INTER_NEAREST))
    return np.stack(xs), np.stack(ys)


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    k = int(torch.randint(0, 4, (1,), generator=gen))
    x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (1, 2))
    if float(torch.rand(1, generator=gen)) < 0.5:
        x, y = x.flip(3), y.flip(2)
    b = x.shape[0]

    def u(lo, hi, *shape):
        return torch.rand(*shape, generator=gen) * (hi - lo) + lo

    x = x.clamp(1e-4, 1) ** u(0.7, 1.4, b, 1, 1, 1)
    x = x * u(0.85, 1.15, b, 3, 1, 1)
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * u(0.6, 1.4, b, 1, 1, 1)
    if float(torch.rand(1, generator=gen)) < 0.3:
        f = float(u(1.5, 3.0, 1))
        h = x.shape[2]
        x = F.interpolate(F.interpolate(x, size=(int(h / f), int(h / f)), mode="area"), size=(h, h), mode="bilinear")
    return x.clamp(0, 1), y


def train_segmenter(out_dir: str | os.PathLike[str], cfg: SegConfig | None = None, root=None) -> Path:
    cfg = cfg or SegConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    base = data_root(root) / "seg_wbc"
    rows = list(csv.DictReader((base / "manifest.csv").open(newline="", encoding="utf-8")))
    groups = near_duplicate_groups([dhash(read_image(base / r["image"]).pixels) for r in rows])
    strata = [r["domain"] for r in rows]
    test = split_groups(groups, cfg.test_fraction, cfg.seed, strata)
    with (out / "split.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "domain", "group", "split"])
        for r, g, t in zip(rows, groups, test, strict=True):
            w.writerow([r["image"], r["domain"], int(g), "test" if t else "train"])
    tr_rows = [r for r, t in zip(rows, test, strict=True) if not t]
    te_rows = [r for r, t in zip(rows, test, strict=True) if t]
    x, y = _load(tr_rows, base, cfg.size)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = SmallUNet()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = max(1, math.ceil(len(x) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    yt = torch.from_numpy(y).long()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    t0 = time.time()
    history = []
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(steps):
            idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            xb, yb = _augment(xt[idx], yt[idx], gen)
            logits = net((xb - mean) / std)
            p = torch.softmax(logits, 1)
            onehot = F.one_hot(yb, 3).permute(0, 3, 1, 2).float()
            inter = (p * onehot).sum((0, 2, 3))
            dice = 1 - ((2 * inter + 1) / (p.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)).mean()
            loss = F.cross_entropy(logits, yb) + dice
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss)
        history.append({"epoch": epoch + 1, "loss": total / steps})
        log.info("epoch %d loss %.4f", epoch + 1, total / steps)
    net.eval()
    onnx_path = out / "leukomorph-seg.onnx"
    export_dense_onnx(net, onnx_path, cfg.size, MEAN, STD, ["probabilities"], "softmax")
    # held-out evaluation at the original resolution, per domain
    from ..segment.model import OnnxSegmenter

    seg = OnnxSegmenter.from_file(onnx_path, cfg.size)
    per = {}
    for r in te_rows:
        img = read_image(base / r["image"]).pixels
        gt = mask_to_labels(read_image(base / r["mask"]).pixels)
        per.setdefault(r["domain"], []).append(dice_scores(seg.segment(img), gt))
    metrics = {
        d: {
            "n": len(v),
            **{k: float(np.mean([s[k] for s in v])) for k in ("nucleus", "cell", "cytoplasm")},
        }
        for d, v in per.items()
    }
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    summary = {
        "config": asdict(cfg),
        "history": history,
        "minutes": (time.time() - t0) / 60,
        "torch": torch.__version__,
        "metrics_test": metrics,
        "sha256": sha,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_train": len(tr_rows),
        "n_test": len(te_rows),
    }
    (out / "training.json").write_text(jsonio.dumps(summary, indent=1))
    log.info("held-out Dice: %s", json.dumps(metrics))
    return onnx_path
