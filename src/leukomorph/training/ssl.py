"""Self-supervised pre-training (SimCLR, Chen et al. 2020) of the cell classifier's backbone on
cell images with or without labels.

Two augmented views of each crop (the classifier's ``strong`` cross-microscope augmentation:
rotation, zoom, flips, resolution loss, HED stain, white-balance, gamma, noise) go through the
backbone's pooled embedding and a two-layer projection head; the NT-Xent loss pulls the two views
of a cell together and pushes the other cells of the batch away. The backbone's weights
(``backbone.pt``) initialise :func:`leukomorph.training.train.train_classifier` through
``TrainConfig.init``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..records import LabelledImage
from .cache import build_cache
from .nets import build_net
from .train import MEAN, STD, augment

log = logging.getLogger(__name__)

__all__ = ["SslConfig", "pretrain_simclr"]


@dataclass
class SslConfig:
    arch: str = "lm-resnet-s"
    size: int = 64
    epochs: int = 15
    batch_size: int = 256
    lr: float = 2e-3
    temperature: float = 0.2
    seed: int = 0
    threads: int = 0
    max_images: int = 0  # 0: all


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2B embeddings: each view's positive is the other view of the same cell."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def pretrain_simclr(
    records: list[LabelledImage],
    out_dir: str | os.PathLike[str],
    cfg: SslConfig | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Pre-train on the images of ``records`` (labels ignored); returns the path of ``backbone.pt``."""
    cfg = cfg or SslConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.max_images and len(records) > cfg.max_images:
        records = [records[i] for i in sorted(rng.choice(len(records), cfg.max_images, replace=False))]
    cache = build_cache(records, cfg.size, cache_dir)
    images = torch.from_numpy(cache["images"][cache["ok"]])
    net = build_net(cfg.arch, 1, cfg.size)
    d = net.embed(torch.zeros(2, 3, cfg.size, cfg.size)).shape[1]
    head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, 128))
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    steps = max(1, len(images) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.1)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    t0, history = time.time(), []
    for epoch in range(cfg.epochs):
        net.train()
        head.train()
        perm = torch.randperm(len(images), generator=gen)
        total = 0.0
        for s in range(steps):
            x = images[perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]].permute(0, 3, 1, 2).float() / 255
            v1 = (augment(x.clone(), gen, "strong") - mean) / std
            v2 = (augment(x.clone(), gen, "strong") - mean) / std
            loss = nt_xent(head(net.embed(v1)), head(net.embed(v2)), cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        history.append({"epoch": epoch + 1, "loss": total / steps, "seconds": time.time() - t0})
        log.info("SSL epoch %d NT-Xent %.4f (%.0f s)", epoch + 1, total / steps, time.time() - t0)
    path = out / "backbone.pt"
    torch.save(net.state_dict(), path)
    (out / "ssl.json").write_text(
        json.dumps(
            {
                "config": asdict(cfg),
                "images": int(len(images)),
                "history": history,
                "minutes": (time.time() - t0) / 60,
                "chance_loss": math.log(2 * cfg.batch_size - 1),
            },
            indent=1,
        )
    )
    return path
