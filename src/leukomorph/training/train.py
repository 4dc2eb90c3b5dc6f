"""Train the cell classifier and export it as ONNX with a model card.

Design: images are decoded once into a uint8 cache; augmentation (flips, free rotation, scale,
translation, HED stain jitter, brightness/contrast/saturation) runs on batches in torch;
sampling is class-balanced (weight ∝ frequency^-power); partial labels ("one of these classes")
use the loss -log Σ_{c∈set} p_c; an exponential moving average of the weights is exported;
temperature scaling is fitted on a validation split of whole groups (patients / near-duplicate
clusters) that the test split never sees.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import jsonio
from ..data.splits import near_duplicate_groups, split_groups
from ..errors import ConfigError
from ..records import LabelledImage
from ..taxonomy import CLASSES
from .cache import build_cache
from .nets import build_net, export_onnx, to_gray

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "train_classifier"]

MEAN = (0.80, 0.72, 0.75)
STD = (0.15, 0.18, 0.12)
# skimage's rgb_from_hed (Ruifrok & Johnston); used only as a basis for stain jitter.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32)
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


@dataclass
class TrainConfig:
    arch: str = "lm-resnet-s"
    size: int = 96
    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.05
    balance_power: float = 0.5
    #: what the balanced sampling counts: "class" (taxonomy classes pooled over the data sets) or
    #: "source" (each data set's classes on their own, so a rare class of one laboratory is not
    #: drowned by the same class from another; see :func:`sampling_weights`)
    balance_by: str = "class"
    ema_decay: float = 0.998
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    near_duplicate_bits: int = 4
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    max_minutes: float = 0.0
    #: fixed softmax temperature; None: fit on the validation split (needs val_fraction > 0)
    temperature: float | None = None
    #: export the averaged weights of the epoch with the best validation accuracy (epoch 0: the
    #: ``init`` weights unchanged; ties go to the earlier epoch) instead of the last epoch's
    keep_best: bool = False
    #: augmentation strength, one of AUGMENT_MODES
    augment: str = "standard"
    #: weights to start from: a backbone (e.g. ``backbone.pt`` of
    #: :func:`leukomorph.training.ssl.pretrain_simclr`; the classification layer is new) or the
    #: ``weights.pt`` of an earlier run with the same classes (warm start: all layers kept)
    init: str | None = None
    #: reduce every input to its luminance (:func:`~leukomorph.training.nets.to_gray`), in training
    #: and inside the exported graph: a stain-blind model for cameras and stains unlike the training
    #: sites' (colour cues such as eosinophil granules are lost)
    grayscale: bool = False
    #: knowledge distillation: weights.pt of a teacher of the same architecture and classes, run on
    #: each augmented batch as given and mirrored (its flip-averaged probabilities at
    #: ``distill_temperature`` are the soft targets); None: no distillation
    distill: str | None = None
    #: share of the loss taken by the soft targets (the rest: the label loss)
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    #: data sets whose records always go to the training split (fine-tuning: the replayed shared
    #: data, already seen by the base model, must not be validated or tested on)
    train_only: tuple[str, ...] = ()
    #: share of the sampling mass given to data sets by name (e.g. {"user": 0.5} when fine-tuning:
    #: a laboratory's few hundred cells would otherwise be drowned by the replayed crops); the
    #: other data sets share the rest in their own proportions
    source_share: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


#: Augmentation strengths. "standard": in-domain jitter. "strong": adds what differs between
#: microscopes and laboratories: magnification (zoom 0.7-1.3), optical/camera resolution
#: (down-/up-sampling, Gaussian blur), white balance (per-channel gain), gamma, wider stain and
#: saturation jitter, sensor noise. "wide": "strong" with magnification drawn log-uniformly from
#: 0.6-2 (cameras and objectives that image cells at up to twice the training scale; zooming out
#: further would fill the crop with the mirrored border). "colour": "strong" with, on a random half
#: of each batch, the colour of other stains and cameras: white balance up to 0.7-1.45 per channel
#: (yellow or blue casts), HED stain 0.6-1.4 with shifts of +-0.12, a hue rotation of up to
#: +-25 degrees and saturation 0.3-1.7.
AUGMENT_MODES = ("standard", "strong", "wide", "colour")


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=x.shape[1])
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.transpose(2, 3), groups=x.shape[1])


def _hue_rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by ``degrees`` (one angle per image) about the grey axis (YIQ chroma plane)."""
    a = degrees * math.pi / 180
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rot = torch.stack(
        [torch.stack([one, zero, zero], 1), torch.stack([zero, c, -s], 1), torch.stack([zero, s, c], 1)], 1
    )
    m = torch.linalg.inv(yiq) @ rot @ yiq  # (B,3,3)
    return torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)


def augment(x: torch.Tensor, gen: torch.Generator, strength: str = "standard") -> torch.Tensor:
    """x: float (B,3,H,W) in [0,1]. Geometric + stain/colour jitter, all on the batch's device."""
    b, dev = x.shape[0], x.device
    strong = strength in ("strong", "wide", "colour")
    colour = strength == "colour"
    # "colour": the half of the batch that gets the wide colour ranges (1) and the rest (0)
    wide_c = (torch.rand(b, generator=gen) < 0.5).float().to(dev) if colour else None

    def mix(narrow: torch.Tensor, wide: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``narrow`` as drawn; in "colour" mode the wide half of the batch gets ``wide()`` instead.
        The wide range is drawn only in that mode, so the other modes keep their random stream."""
        if wide_c is None:
            return narrow
        w = wide_c.view(-1, *([1] * (narrow.dim() - 1)))
        return narrow * (1 - w) + wide() * w

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=gen) * (hi - lo) + lo).to(dev)

    theta = u(-math.pi, math.pi, b)
    if strength == "wide":
        scale = torch.exp(u(math.log(0.6), math.log(2.0), b))
    else:
        scale = u(0.7, 1.3, b) if strong else u(0.9, 1.1, b)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0).to(dev)
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    mat = torch.stack(
        [torch.stack([cos * flip, -sin, u(-0.05, 0.05, b)], 1), torch.stack([sin * flip, cos, u(-0.05, 0.05, b)], 1)], 1
    )
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if strong:
        # resolution loss on a random half of the batch: area down-sampling then bilinear up-sampling,
        # or a Gaussian blur (one random strength per batch keeps it cheap)
        h, w = x.shape[2:]
        sel = torch.nonzero(torch.rand(b, generator=gen) < 0.5).flatten().to(dev)
        if len(sel):
            if float(torch.rand(1, generator=gen)) < 0.5:
                f = float(u(1.5, 3.5, 1))
                small = F.interpolate(x[sel], size=(max(8, int(h / f)), max(8, int(w / f))), mode="area")
                x[sel] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
            else:
                x[sel] = _blur(x[sel], float(u(0.6, 2.0, 1)))
    # HED stain jitter in optical density space
    od = -torch.log(x.clamp(min=1 / 255))
    hed = od.permute(0, 2, 3, 1) @ _HED_FROM_RGB.to(dev)
    if strong:
        hed = hed * mix(u(0.7, 1.3, b, 1, 1, 3), lambda: u(0.6, 1.4, b, 1, 1, 3)) + mix(
            u(-0.08, 0.08, b, 1, 1, 3), lambda: u(-0.12, 0.12, b, 1, 1, 3)
        )
    else:
        hed = hed * u(0.9, 1.1, b, 1, 1, 3) + u(-0.03, 0.03, b, 1, 1, 3)
    x = torch.exp(-(hed @ _RGB_FROM_HED.to(dev))).permute(0, 3, 1, 2)
    if strong:
        # white balance / illumination colour
        x = x.clamp(0, 1) * mix(
            u(0.85, 1.15, b, 3, 1, 1), lambda: torch.exp(u(math.log(0.7), math.log(1.45), b, 3, 1, 1))
        )
        x = x.clamp(1e-4, 1) ** u(0.7, 1.4, b, 1, 1, 1)  # gamma
        if wide_c is not None:
            x = torch.where(wide_c.view(-1, 1, 1, 1) > 0, _hue_rotate(x, u(-25.0, 25.0, b)), x)
    # brightness / contrast / saturation
    gray = x.mean(1, keepdim=True)
    sat = mix(u(0.6, 1.4, b, 1, 1, 1), lambda: u(0.3, 1.7, b, 1, 1, 1)) if strong else u(0.8, 1.2, b, 1, 1, 1)
    x = gray + (x - gray) * sat
    m = x.mean((1, 2, 3), keepdim=True)
    x = (x - m) * u(0.85, 1.15, b, 1, 1, 1) + m + u(-0.06, 0.06, b, 1, 1, 1)
    if strong:
        x = x + torch.randn(x.shape, generator=gen).to(dev) * u(0.0, 0.03, b, 1, 1, 1)
    return x.clamp(0, 1)


def _partial_nll(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~mask, -1e4), 1)).mean()


def _distill_loss(logits: torch.Tensor, teacher: nn.Module, x: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) at temperature ``t`` (scaled by t², Hinton et al. 2015); the teacher's
    probabilities are averaged over the batch as given and mirrored."""
    with torch.no_grad():
        views = (teacher(x).float(), teacher(torch.flip(x, (3,))).float())
        soft = (torch.softmax(views[0] / t, 1) + torch.softmax(views[1] / t, 1)) / 2
    return F.kl_div(torch.log_softmax(logits / t, 1), soft, reduction="batchmean") * t * t


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def _logits(net: nn.Module, images: np.ndarray, cfg: TrainConfig, dev: torch.device) -> torch.Tensor:
    net.eval()
    mean = torch.tensor(cfg.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=dev).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(images), 512):
        x = torch.from_numpy(images[i : i + 512]).to(dev).permute(0, 3, 1, 2).float() / 255
        if cfg.grayscale:
            x = to_gray(x)
        out.append(net((x - mean) / std).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, len(CLASSES))


def _fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return 1.0
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.5, 5.0))


BALANCE_MODES = ("class", "source")


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def sampling_weights(recs: Sequence[LabelledImage], masks: np.ndarray, power: float, by: str = "class") -> np.ndarray:
    """Sampling probability of each training item: weight ∝ frequency^-power of its class.

    ``by="class"`` counts the exactly labelled items of each taxonomy class over all data sets
    together. ``by="source"`` counts each (data set, class) stratum on its own, a partially
    labelled item adding 1/k to each of its k classes; so DeepAPL's 64 eosinophils are weighted
    as DeepAPL eosinophils, not as 64 of PBC's 1,600. A partially labelled item gets the mean
    weight of its classes. Returns probabilities summing to 1.
    """
    _check_choice(by, BALANCE_MODES, "balance_by")
    k = masks.sum(1)
    if by == "class":
        exact_counts = Counter(r.classes[0] for r in recs if r.exact)
        freq = np.array([max(exact_counts.get(c, 0), 1) for c in CLASSES], float)
        w = (masks * freq ** (-power)).sum(1) / k
    else:
        ds = np.array([r.dataset for r in recs])
        w = np.zeros(len(recs))
        for d in np.unique(ds):
            m = ds == d
            freq = np.maximum((masks[m] / k[m, None]).sum(0), 1.0)
            w[m] = (masks[m] * freq ** (-power)).sum(1) / k[m]
    return w / w.sum()


def share_sources(w: np.ndarray, datasets: Sequence[str], share: dict) -> np.ndarray:
    """Rescale sampling probabilities ``w`` so that each data set named in ``share`` gets that share
    of the total; the others keep their proportions within what is left. Returns probabilities."""
    ds = np.asarray(datasets)
    fixed = {d: float(v) for d, v in share.items() if (ds == d).any()}
    if any(v < 0 for v in fixed.values()) or sum(fixed.values()) > 1:
        raise ConfigError(f"source shares must be >= 0 and sum to at most 1, not {share}")
    out = np.asarray(w, float).copy()
    rest = ~np.isin(ds, list(fixed))
    left = 1.0 - sum(fixed.values())
    for d, v in fixed.items():
        m = ds == d
        out[m] = out[m] / out[m].sum() * v
    if rest.any():
        out[rest] = out[rest] / out[rest].sum() * left
    return out / out.sum()


def train_classifier(
    records: Sequence[LabelledImage],
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[str, dict], None] | None = None,
) -> dict:
    """Train, export ``model.onnx`` + ``split.csv`` + ``training.json`` into ``out_dir``; return a summary."""
    # checked before the (long) decoding of the crops; sampling_weights checks again for its own callers
    _check_choice(cfg.balance_by, BALANCE_MODES, "balance_by")
    _check_choice(cfg.augment, AUGMENT_MODES, "augmentation")
    if cfg.epochs < 1 or cfg.batch_size < 1 or not cfg.lr >= 0:
        raise ConfigError(
            f"epochs and batch size must be >= 1 and lr >= 0 (got {cfg.epochs}, {cfg.batch_size}, {cfg.lr})"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    emit = progress or (lambda stage, info: None)
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    dev = _pick_device(cfg.device)

    cache = build_cache(records, cfg.size, cache_dir, progress=lambda i, n: emit("decode", {"done": i, "total": n}))
    keep = np.nonzero(cache["ok"])[0]
    recs = [records[i] for i in keep]
    images = cache["images"][keep]
    hashes = cache["hashes"][keep]
    keys = [f"{r.dataset}:{r.patient_id}" if r.patient_id else None for r in recs]
    groups = near_duplicate_groups(hashes, cfg.near_duplicate_bits, keys)
    strata = [f"{r.dataset}:{r.diagnosis or ''}" for r in recs]
    test = split_groups(groups, cfg.test_fraction, cfg.seed, strata)
    rest = np.nonzero(~test)[0]
    val_in_rest = (
        np.zeros(len(rest), bool)
        if cfg.val_fraction <= 0
        else split_groups(
            groups[rest], cfg.val_fraction / (1 - cfg.test_fraction), cfg.seed + 1, [strata[i] for i in rest]
        )
    )
    val = np.zeros(len(recs), bool)
    val[rest[val_in_rest]] = True
    if cfg.train_only:
        pinned = np.array([r.dataset in cfg.train_only for r in recs])
        test &= ~pinned
        val &= ~pinned
    train = ~(test | val)
    split_name = np.where(test, "test", np.where(val, "val", "train"))
    with (out / "split.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "dataset", "patient_id", "group", "split"])
        for r, g, s in zip(recs, groups, split_name, strict=True):
            w.writerow([r.path, r.dataset, r.patient_id or "", int(g), s])

    cidx = {c: i for i, c in enumerate(CLASSES)}
    masks = np.zeros((len(recs), len(CLASSES)), bool)
    for i, r in enumerate(recs):
        masks[i, [cidx[c] for c in r.classes]] = True
    tr = np.nonzero(train)[0]
    item_w = sampling_weights([recs[i] for i in tr], masks[tr], cfg.balance_power, cfg.balance_by)
    if cfg.source_share:
        item_w = share_sources(item_w, [recs[i].dataset for i in tr], cfg.source_share)
    item_w = torch.tensor(item_w)

    net = build_net(cfg.arch, len(CLASSES), cfg.size)
    if cfg.init:
        own = net.state_dict()
        state = {
            k: v
            for k, v in torch.load(cfg.init, map_location="cpu").items()
            if not (k.startswith("head.3.") and (k not in own or own[k].shape != v.shape))
        }
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise ConfigError(f"{cfg.init}: not a backbone of {cfg.arch} ({exc})") from exc
        if unexpected or any(not k.startswith("head.3.") for k in missing):
            raise ConfigError(f"{cfg.init}: not a backbone of {cfg.arch} (missing {missing}, unexpected {unexpected})")
        log.info("%s initialised from %s", "backbone" if missing else "whole network (warm start)", cfg.init)
    net = net.to(dev).to(memory_format=torch.channels_last)
    teacher = None
    if cfg.distill:
        teacher = build_net(cfg.arch, len(CLASSES), cfg.size)
        try:
            teacher.load_state_dict(torch.load(cfg.distill, map_location="cpu"))
        except RuntimeError as exc:
            msg = f"{cfg.distill}: not a {cfg.arch} network with the {len(CLASSES)} classes ({exc})"
            raise ConfigError(msg) from exc
        teacher = teacher.to(dev).to(memory_format=torch.channels_last).eval()
        for prm in teacher.parameters():
            prm.requires_grad_(False)
    ema = torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
    )
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(tr) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15
    )
    mean = torch.tensor(cfg.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=dev).view(1, 3, 1, 1)
    amp = dev.type == "cuda"
    images_t = torch.from_numpy(images)
    masks_t = torch.from_numpy(masks)
    val_idx = np.nonzero(val & masks.sum(1).astype(bool) & (masks.sum(1) == 1))[0]
    val_y = torch.from_numpy(masks[val_idx].argmax(1))
    history = []
    deadline = t0 + cfg.max_minutes * 60 if cfg.max_minutes else math.inf

    def val_accuracy() -> float:  # of the averaged weights, on the exactly labelled validation items
        if not len(val_y):
            return float("nan")
        return float((_logits(ema.module, images[val_idx], cfg, dev).argmax(1) == val_y).float().mean())

    best: tuple[float, int, dict | None] = (-math.inf, -1, None)  # accuracy, epoch, averaged weights
    if cfg.keep_best and len(val_y):
        vacc = val_accuracy()
        history.append({"epoch": 0, "loss": float("nan"), "val_acc_ema": vacc, "seconds": 0.0})
        best = (vacc, 0, copy.deepcopy(ema.module.state_dict()))
        log.info("epoch 0 (starting weights) val_acc %.4f", vacc)
    for epoch in range(cfg.epochs):
        net.train()
        order = tr[torch.multinomial(item_w, steps_per_epoch * cfg.batch_size, replacement=True, generator=gen).numpy()]
        total, te = 0.0, time.time()
        for s in range(steps_per_epoch):
            idx = torch.from_numpy(order[s * cfg.batch_size : (s + 1) * cfg.batch_size])
            x = images_t[idx].to(dev).permute(0, 3, 1, 2).float().div_(255)
            x = augment(x, gen, cfg.augment)
            if cfg.grayscale:
                x = to_gray(x)
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(x).float()
                loss = _partial_nll(logits, masks_t[idx].to(dev))
                if teacher is not None:
                    loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * _distill_loss(
                        logits, teacher, x, cfg.distill_temperature
                    )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema.update_parameters(net)
            total += loss.item()
        vacc = val_accuracy()
        rec = {"epoch": epoch + 1, "loss": total / steps_per_epoch, "val_acc_ema": vacc, "seconds": time.time() - te}
        history.append(rec)
        emit("epoch", rec)
        log.info("epoch %(epoch)d loss %(loss).4f val_acc %(val_acc_ema).4f (%(seconds).0fs)", rec)
        if cfg.keep_best and len(val_y) and vacc > best[0]:
            best = (vacc, epoch + 1, copy.deepcopy(ema.module.state_dict()))
        if time.time() > deadline:
            log.warning("time budget reached after %d epochs", epoch + 1)
            break

    chosen = history[-1]["epoch"] if history else 0
    if best[2] is not None:
        ema.module.load_state_dict(best[2])
        chosen = best[1]
        log.info("kept epoch %d (best validation accuracy %.4f)", chosen, best[0])
    final = ema.module.cpu().eval()
    vl = _logits(final, images[val_idx], cfg, torch.device("cpu"))
    temperature = cfg.temperature if cfg.temperature is not None else _fit_temperature(vl, val_y)
    onnx_path = out / "model.onnx"
    export_onnx(
        final, onnx_path, cfg.size, cfg.mean, cfg.std, temperature, with_embedding=True, grayscale=cfg.grayscale
    )
    torch.save(final.state_dict(), out / "weights.pt")
    summary = {
        "config": asdict(cfg),
        "device": str(dev),
        "torch": torch.__version__,
        "temperature": temperature,
        "history": history,
        "chosen_epoch": chosen,
        "minutes": (time.time() - t0) / 60,
        "counts": {
            s: dict(
                Counter(f"{r.dataset}:{'|'.join(r.classes)}" for r, sn in zip(recs, split_name, strict=True) if sn == s)
            )
            for s in ("train", "val", "test")
        },
        "n_groups": int(len(np.unique(groups))),
        "patients": {
            s: sorted({r.patient_id for r, sn in zip(recs, split_name, strict=True) if sn == s and r.patient_id})
            for s in ("train", "val", "test")
        },
    }
    (out / "training.json").write_text(jsonio.dumps(summary, indent=1))
    return summary
