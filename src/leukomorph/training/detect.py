"""Train a small centre-point detector (CenterNet-style) for white cells, red cells and platelets
on txl_pbc smear fields.

Model: a residual encoder to stride 32 with a feature-pyramid decoder back to stride 4, a heat-map
head (one map per class, focal loss on elliptical Gaussians at the box centres, as in
CenterNet/TTFNet) and a regression head (centre offset; log box width and height). Trained from
scratch on txl_pbc ``train`` fields (four public sets: PBC, Raabin-WBC, BCCD, BCDD); the released
``val`` split is the held-out test set (AP per class and per source in ``training.json``).

Input contract: uint8 NHWC RGB, normalisation inside the ONNX graph, any height/width that is a
multiple of 32; fields are resized so that their longer side is ``size`` (the scale the model
learned: red cells about 40-60 px across), with scale jitter in training so that other
magnifications still work. Outputs ``heat`` (N, 3, H/4, W/4) and ``reg`` (N, 4, H/4, W/4), decoded
by :func:`leukomorph.detect.centernet.decode`.
"""

from __future__ import annotations

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
from ..data.datasets import load_txl
from ..imageops import border_fill
from .card import card_head
from .nets import export_dense_onnx
from .train import MEAN, STD

log = logging.getLogger(__name__)

__all__ = [
    "DET_CLASSES",
    "CenterNetSmall",
    "DetConfig",
    "choose_thresholds",
    "evaluate_detector",
    "finalize_detector",
    "glass_colour",
    "lay_cell",
    "load_txl",
    "overlapping_pair",
    "train_detector",
]

DET_CLASSES = ("white_blood_cell", "red_blood_cell", "platelet")
STRIDE = 4


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = _cbr(c, c)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b(self.a(x)))


class CenterNetSmall(nn.Module):
    def __init__(self, widths=(24, 32, 64, 96, 128), dec: int = 48, n_classes: int = 3) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.s2 = nn.Sequential(_cbr(3, w1, 2), _cbr(w1, w1))
        self.s4 = nn.Sequential(_cbr(w1, w2, 2), _Res(w2))
        self.s8 = nn.Sequential(_cbr(w2, w3, 2), _Res(w3), _Res(w3))
        self.s16 = nn.Sequential(_cbr(w3, w4, 2), _Res(w4), _Res(w4))
        self.s32 = nn.Sequential(_cbr(w4, w5, 2), _Res(w5), _Res(w5))
        self.lat32 = nn.Conv2d(w5, dec, 1)
        self.lat16 = nn.Conv2d(w4, dec, 1)
        self.lat8 = nn.Conv2d(w3, dec, 1)
        self.lat4 = nn.Conv2d(w2, dec, 1)
        self.smooth16 = _cbr(dec, dec)
        self.smooth8 = _cbr(dec, dec)
        self.smooth4 = _cbr(dec, dec)
        self.heat = nn.Sequential(_cbr(dec, dec), nn.Conv2d(dec, n_classes, 1))
        self.reg = nn.Sequential(_cbr(dec, dec), nn.Conv2d(dec, 4, 1))
        nn.init.constant_(self.heat[-1].bias, -2.19)  # prior 0.1, as in CenterNet

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c4 = self.s4(self.s2(x))
        c8 = self.s8(c4)
        c16 = self.s16(c8)
        c32 = self.s32(c16)
        p = self.lat32(c32)
        p = self.smooth16(self.lat16(c16) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        p = self.smooth8(self.lat8(c8) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        p = self.smooth4(self.lat4(c4) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        return self.heat(p), self.reg(p)


@dataclass
class DetConfig:
    size: int = 256
    epochs: int = 40
    batch_size: int = 16
    lr: float = 3e-3
    #: random zoom of each training field relative to the training scale (0.5-2.2: also fields seen at
    #: half or twice the magnification, where white cells are cut by the image border)
    scale_jitter: tuple[float, float] = (0.5, 2.2)
    seed: int = 0
    threads: int = 0
    limit: int = 0  # use only the first N training fields (smoke tests)
    #: probability that a training field gets a white cell of another training field (same source)
    #: laid over one of its own white cells (:func:`overlapping_pair`): clumps to separate (0: none)
    overlap_paste: float = 0.0
    #: how much the laid cell overlaps, as a fraction of its width (uniform in this range)
    overlap_range: tuple[float, float] = (0.0, 0.45)


def glass_colour(rgb: np.ndarray) -> np.ndarray:
    """Colour of the bare glass: median of the brightest tenth of the pixels (never below 1)."""
    px = rgb.reshape(-1, 3).astype(np.float32)
    lum = px.mean(1)
    return np.maximum(np.median(px[lum >= np.percentile(lum, 90)], 0), 1.0)


def lay_cell(
    field: np.ndarray, patch: np.ndarray, glass: np.ndarray, x0: int, y0: int, soft: bool = False
) -> np.ndarray:
    """``field`` with ``patch`` (cut from a field whose glass colour is ``glass``) laid at (x0, y0)
    by transmittance, field × patch / glass: a cell over a cell darkens as stacked absorbing layers
    do, and the patch's bare glass leaves the field as it was. ``soft``: only the ellipse inscribed
    in the patch, with a blurred edge, so that neither the patch's corners (neighbouring red cells)
    nor a rectangular edge come with it."""
    out = field.astype(np.float32)
    ph, pw = patch.shape[:2]
    t = np.clip(patch.astype(np.float32) / glass, 0, 1.0)
    if soft:
        alpha = np.zeros((ph, pw), np.float32)
        cv2.ellipse(alpha, (pw // 2, ph // 2), (max(1, pw // 2 - 1), max(1, ph // 2 - 1)), 0, 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, 0.06 * min(ph, pw)))[..., None]
        t = 1 - alpha * (1 - t)
    out[y0 : y0 + ph, x0 : x0 + pw] *= t
    return np.clip(out, 0, 255).astype(np.uint8)


def overlapping_pair(item: dict, donors: list[tuple[dict, int]], rng: np.random.Generator, overlap=(0.0, 0.45)):
    """``item`` (a txl field) with a donor white cell (``donors``: (field, box index)) laid softly
    (:func:`lay_cell`) over one of its white cells, overlapping by a fraction of the donor's width
    drawn from ``overlap``, on a random side where it fits, shifted sideways by up to a third of its
    size; its box is added as a white cell. The item unchanged when it has no white cell or nothing
    fits."""
    own = np.nonzero(item["labels"] == 0)[0]
    if not len(own) or not donors:
        return item
    a = item["boxes"][int(rng.choice(own))]
    src, j = donors[int(rng.integers(len(donors)))]
    bx0, by0, bx1, by1 = (int(round(v)) for v in src["boxes"][j])
    patch = src["image"][max(0, by0) : by1, max(0, bx0) : bx1]
    ph, pw = patch.shape[:2]
    h, w = item["image"].shape[:2]
    if ph < 4 or pw < 4 or ph >= h or pw >= w:
        return item
    f = rng.uniform(*overlap)
    cx = (a[0] + a[2]) / 2 - pw / 2 + rng.uniform(-1, 1) * pw / 3
    cy = (a[1] + a[3]) / 2 - ph / 2 + rng.uniform(-1, 1) * ph / 3
    sides = [(a[2] - f * pw, cy), (a[0] + f * pw - pw, cy), (cx, a[3] - f * ph), (cx, a[1] + f * ph - ph)]
    for k in rng.permutation(4):
        x0, y0 = (int(round(v)) for v in sides[k])
        if 0 <= x0 and x0 + pw <= w and 0 <= y0 and y0 + ph <= h:
            return {
                **item,
                "image": lay_cell(item["image"], patch, glass_colour(src["image"]), x0, y0, soft=True),
                "boxes": np.concatenate([item["boxes"], [[x0, y0, x0 + pw, y0 + ph]]]).astype(np.float32),
                "labels": np.concatenate([item["labels"], [0]]).astype(item["labels"].dtype),
            }
    return item


def _augment(item: dict, size: int, rng: np.random.Generator, jitter: tuple[float, float]):
    img, boxes = item["image"], item["boxes"].copy()
    h, w = img.shape[:2]
    s = size / max(h, w) * rng.uniform(*jitter)
    # random placement of the scaled field inside (or a random window of it in) a size×size canvas
    tx = rng.uniform(min(0, size - w * s), max(0, size - w * s))
    ty = rng.uniform(min(0, size - h * s), max(0, size - h * s))
    m = np.array([[s, 0, tx], [0, s, ty]], np.float32)
    border = border_fill(img)
    out = cv2.warpAffine(
        img,
        m,
        (size, size),
        flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=border,
    )
    boxes = boxes * s + np.array([tx, ty, tx, ty], np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
        boxes[:, [0, 2]] = size - boxes[:, [2, 0]]
    if rng.random() < 0.5:
        out = out[::-1]
        boxes[:, [1, 3]] = size - boxes[:, [3, 1]]
    if rng.random() < 0.5:  # transpose (with the flips: all 8 dihedral symmetries)
        out = out.transpose(1, 0, 2)
        boxes = boxes[:, [1, 0, 3, 2]]
    vis = np.clip(boxes, 0, size)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    varea = (vis[:, 2] - vis[:, 0]).clip(0) * (vis[:, 3] - vis[:, 1]).clip(0)
    keep = varea > 0.35 * np.maximum(area, 1e-6)
    # colour: gamma, channel gains, saturation, occasional blur (stain / camera variation)
    x = out.astype(np.float32) / 255
    x = np.clip(x, 1e-4, 1) ** rng.uniform(0.7, 1.4)
    x = x * rng.uniform(0.85, 1.15, 3)
    g = x.mean(2, keepdims=True)
    x = g + (x - g) * rng.uniform(0.6, 1.4)
    if rng.random() < 0.2:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    return np.clip(x, 0, 1).astype(np.float32), vis[keep], item["labels"][keep]


def _targets(boxes: np.ndarray, labels: np.ndarray, size: int, n_classes: int):
    o = size // STRIDE
    heat = np.zeros((n_classes, o, o), np.float32)
    reg = np.zeros((4, o, o), np.float32)
    mask = np.zeros((o, o), np.float32)
    yy, xx = np.mgrid[0:o, 0:o].astype(np.float32)
    order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))  # small boxes win cells
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        ix, iy = min(o - 1, int(cx)), min(o - 1, int(cy))
        sx, sy = max(0.54 * bw / STRIDE / 6, 0.5), max(0.54 * bh / STRIDE / 6, 0.5)
        g = np.exp(-((xx - ix) ** 2) / (2 * sx**2) - ((yy - iy) ** 2) / (2 * sy**2))
        c = labels[i]
        heat[c] = np.maximum(heat[c], g)
        reg[:, iy, ix] = (cx - ix, cy - iy, math.log(bw), math.log(bh))
        mask[iy, ix] = 1
    return heat, reg, mask


def _focal(pred_logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(pred_logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - gt) ** 4 * neg
    n = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def evaluate_detector(detector, items: list[dict], n_boot: int = 200, seed: int = 0, **kw) -> dict:
    """AP@0.5 per class, overall (with a 95% bootstrap CI over fields) and per source, of
    ``detector.detect`` on loaded txl items."""
    from ..detect.metrics import average_precision

    dets = {c: [] for c in DET_CLASSES}
    for it in items:
        for d in detector.detect(it["image"], **kw):
            if d.label in dets:
                dets[d.label].append((it["id"], (d.x0, d.y0, d.x1, d.y1), d.score))
    out: dict = {}
    rng = np.random.default_rng(seed)
    sources = ["all", *sorted({it["source"] for it in items})]
    for ci, c in enumerate(DET_CLASSES):
        out[c] = {}
        for s in sources:
            keep = [it for it in items if s == "all" or it["source"] == s]
            truths = {
                it["id"]: [tuple(b) for b, lab in zip(it["boxes"], it["labels"], strict=True) if lab == ci]
                for it in keep
            }
            ids = set(truths)
            r = average_precision([d for d in dets[c] if d[0] in ids], truths)
            out[c][s] = {"ap50": r["ap"], "n_true": r["n_true"], "recall_max": r.get("recall_max", 0.0)}
            if s == "all" and n_boot and r["n_true"]:
                by_img: dict[str, list] = {}
                for d in dets[c]:
                    by_img.setdefault(d[0], []).append(d)
                ids_l = sorted(ids)
                boot = []
                for _ in range(n_boot):
                    pick = rng.choice(len(ids_l), len(ids_l))
                    t_b, d_b = {}, []
                    for j, k in enumerate(pick):  # resampled fields get distinct ids
                        key = f"{j}:{ids_l[k]}"
                        t_b[key] = truths[ids_l[k]]
                        d_b += [(key, b, sc) for _, b, sc in by_img.get(ids_l[k], [])]
                    if sum(len(v) for v in t_b.values()):
                        boot.append(average_precision(d_b, t_b)["ap"])
                out[c][s]["ap50_ci95"] = [float(v) for v in np.percentile(boot, [2.5, 97.5])]
    return out


def train_detector(out_dir: str | os.PathLike[str], cfg: DetConfig | None = None, root=None) -> Path:
    cfg = cfg or DetConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    items = load_txl("train", root, cfg.limit)
    donors: dict[str, list[tuple[dict, int]]] = {}  # white cells to lay over others, by source
    for it in items:
        for j in np.nonzero(it["labels"] == 0)[0]:
            donors.setdefault(it["source"], []).append((it, int(j)))
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = CenterNetSmall()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = max(1, math.ceil(len(items) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.15)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    t0 = time.time()
    history = []
    for epoch in range(cfg.epochs):
        net.train()
        perm = rng.permutation(len(items))
        tot = {"heat": 0.0, "reg": 0.0}
        for s in range(steps):
            xs, hs, rs, ms = [], [], [], []
            for i in perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]:
                item = items[i]
                if cfg.overlap_paste and rng.random() < cfg.overlap_paste:
                    pool = [d for d in donors.get(item["source"], []) if d[0] is not item]
                    item = overlapping_pair(item, pool, rng, cfg.overlap_range)
                x, b, lab = _augment(item, cfg.size, rng, cfg.scale_jitter)
                h, r, m = _targets(b, lab, cfg.size, len(DET_CLASSES))
                xs.append(x)
                hs.append(h)
                rs.append(r)
                ms.append(m)
            xb = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2)
            hb, rb, mb = (torch.from_numpy(np.stack(v)) for v in (hs, rs, ms))
            ph, pr = net((xb - mean) / std)
            lh = _focal(ph, hb)
            mk = mb.unsqueeze(1)
            lr_ = (F.l1_loss(pr * mk, rb * mk, reduction="sum")) / mk.sum().clamp(min=1)
            loss = lh + lr_
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot["heat"] += lh.item()
            tot["reg"] += lr_.item()
        history.append({"epoch": epoch + 1, **{k: v / steps for k, v in tot.items()}})
        log.info(
            "epoch %d heat %.4f reg %.4f (%.0f s)", epoch + 1, tot["heat"] / steps, tot["reg"] / steps, time.time() - t0
        )
    net.eval()
    onnx_path = out / "leukomorph-det.onnx"
    export_dense_onnx(net, onnx_path, cfg.size, MEAN, STD, ["heat", "reg"], "sigmoid_first", any_size=True)
    torch.save(net.state_dict(), out / "weights.pt")
    from ..detect.model import OnnxDetector

    det = OnnxDetector.from_file(onnx_path, cfg.size, DET_CLASSES, STRIDE)
    metrics = evaluate_detector(det, load_txl("val", root))
    summary = {
        "config": asdict(cfg),
        "history": history,
        "minutes": (time.time() - t0) / 60,
        "torch": torch.__version__,
        "metrics_val": metrics,
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_train": len(items),
        "parameters": sum(p.numel() for p in net.parameters()),
    }
    (out / "training.json").write_text(jsonio.dumps(summary, indent=1))
    log.info("val AP@0.5 white cells: %.3f", metrics["white_blood_cell"]["all"]["ap50"])
    return onnx_path


THRESHOLD_GRID = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))  # 0.10 … 0.90


def choose_thresholds(detector, items: list[dict], grid=THRESHOLD_GRID) -> dict[str, float]:
    """Per class, the score threshold with the best F1 (IoU ≥ 0.5, greedy by score) on ``items``
    (training fields: the operating point is not chosen on the held-out fields)."""
    from ..detect.metrics import iou

    found = [(it, detector.detect(it["image"])) for it in items]
    out = {}
    for ci, c in enumerate(DET_CLASSES):
        best = (-1.0, 0.3)
        for t in grid:
            tp = fp = fn = 0
            for it, dets in found:
                gts = [tuple(b) for b, lab in zip(it["boxes"], it["labels"], strict=True) if lab == ci]
                used = [False] * len(gts)
                for d in (d for d in dets if d.label == c and d.score >= t):
                    ious = [iou((d.x0, d.y0, d.x1, d.y1), g) if not used[k] else 0.0 for k, g in enumerate(gts)]
                    k = int(np.argmax(ious)) if ious else -1
                    if k >= 0 and ious[k] >= 0.5:
                        used[k] = True
                        tp += 1
                    else:
                        fp += 1
                fn += used.count(False)
            f1 = 2 * tp / max(1, 2 * tp + fp + fn)
            if f1 > best[0]:
                best = (f1, float(round(t, 2)))
        out[c] = best[1]
    return out


def rbc_diameter_at_model_scale(items: list[dict], size: int) -> float:
    """Median red-cell box side (sqrt of area) after resizing each field's longer side to ``size``."""
    sides = []
    for it in items:
        s = size / max(it["image"].shape[:2])
        b = it["boxes"][it["labels"] == DET_CLASSES.index("red_blood_cell")] * s
        sides += list(np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
    return float(np.median(sides))


def finalize_detector(
    out_dir: str | os.PathLike[str], name: str = "leukomorph-det", version: str = "1.0.0", root=None
) -> Path:
    """Registry entry (named ONNX + card with held-out AP, scale contract, sha256) from a training folder."""
    import shutil

    out = Path(out_dir)
    training = json.loads((out / "training.json").read_text())
    cfg = training["config"]
    onnx_name = f"{name}.onnx"
    if onnx_name != "leukomorph-det.onnx":
        shutil.copyfile(out / "leukomorph-det.onnx", out / onnx_name)
    train_items = load_txl("train", root)
    rbc = rbc_diameter_at_model_scale(train_items, cfg["size"])
    from ..detect.model import OnnxDetector

    bare = OnnxDetector.from_file(out / onnx_name, cfg["size"], DET_CLASSES, STRIDE)
    thresholds = choose_thresholds(bare, train_items)
    metrics_val = evaluate_detector(bare, load_txl("val", root), n_boot=500, auto_scale=False)
    card = {
        **card_head(name, version, "detection", out / onnx_name, size_bytes=True),
        "classes": list(DET_CLASSES),
        "input": {
            "size": cfg["size"],
            "dtype": "uint8",
            "layout": "NHWC",
            "colour": "RGB",
            "multiple_of": 32,
            "stride": STRIDE,
            "rule": "the field resized so that its longer side is `size` px (training scale), or to the scale given "
            "by the pixel size / the red-cell ruler; padded right/bottom to a multiple of 32; images larger than "
            "the tile at model scale are tiled (leukomorph.detect.model)",
            "rbc_diameter_px": round(rbc, 1),
            "um_per_px": round(7.5 / rbc, 4),
            "um_per_px_note": "implied by a 7.5 µm red cell at the median training red-cell size; "
            "the sources give no pixel size",
            "normalisation": {"inside_graph": True},
        },
        "output": {
            "heat": "(N, 3, H/4, W/4) sigmoid centre heat maps per class",
            "reg": "(N, 4, H/4, W/4) centre offset x, y (grid cells); log width, log height (input px)",
            "decoder": "leukomorph.detect.centernet.decode (3×3 peak, threshold 0.05), NMS IoU 0.6",
        },
        "inference": {
            "score_threshold": thresholds,
            "score_threshold_note": "per class, best F1 (IoU 0.5) on the training fields; AP uses all scores",
        },
        "architecture": {
            "name": "CenterNet-style centre-point detector: residual encoder to stride 32, FPN decoder to stride 4, "
            "trained from scratch",
            "framework": f"torch {training['torch']} → ONNX opset 17",
            "parameters": training.get("parameters"),
        },
        "training": {
            "data": "txl_pbc (TXL-PBC v2, Gan et al. 2024, MIT): fields from PBC, Raabin-WBC, BCCD, BCDD; "
            "released 'train' split",
            "config": cfg,
            "minutes": round(training["minutes"], 1),
            "n_train": training["n_train"],
            "final_epoch": training["history"][-1],
        },
        "split": {
            "method": "txl_pbc's released train/val split; val (252 fields) is the held-out test set, "
            "never used for choices"
        },
        "metrics": {
            "held_out_val_ap50": metrics_val,
            "note": "AP@0.5 (VOC all-point) on txl_pbc val at the training scale; 95% CI: bootstrap over fields (500)",
        },
        "intended_use": "Find white cells (and red cells, platelets) in peripheral-blood smear fields for "
        "classification and "
        "counting; research use, every detection reviewable.",
        "limitations": [
            "Trained on four public sets (peripheral blood, 256-640 px fields); bone-marrow fields, thick areas "
            "and other "
            "magnifications are unmeasured.",
            "Red-cell and platelet boxes are for counting and the scale ruler; "
            "their AP is lower than the white cells'.",
            "Touching or overlapping white cells may be found as one box.",
        ],
    }
    path = out / f"{name}.json"
    path.write_text(jsonio.dumps(card, indent=1))
    return path
