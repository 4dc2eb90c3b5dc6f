"""Architecture study at a CPU-sized budget: accuracy on the held-out split against CPU latency.

    python benchmarks/arch_study.py --out runs/arch [--size 96 --epochs 8 --archs A B ...]

Needs the train extra, and timm for the `timm:` entries. timm needs torchvision, which installs
on this machine only with the multi-GB CUDA build of torch, so the study runs in its own
environment (it runs on the CPU there):

    python3.11 -m venv /work/timm-venv
    /work/timm-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 timm onnx onnxruntime
    /work/timm-venv/bin/pip install -e '.[train]'
    /work/timm-venv/bin/python benchmarks/arch_study.py --out runs/arch

Every architecture is trained from scratch (no download of pretrained weights: the tool is
offline) with the same records, split (the shipped model's: same seed), augmentation ("strong")
and schedule, then finalized like a shipped model (held-out test metrics with bootstrap CIs).
Latency: ONNX Runtime on 2 threads, batch 64, at the trained size and at 160 px (the default's).
A short schedule favours small, fast-converging networks; the table says which architecture
learns most per CPU minute here, not which would win with a GPU and ImageNet pre-training.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ARCHS = [
    "lm-resnet-s",
    "timm:resnet18",
    "timm:efficientnet_b0",
    "timm:convnext_atto",
    "timm:vit_tiny_patch16_224",
]


def latency(onnx_path: Path, size: int, threads: int = 2, batch: int = 64, repeats: int = 5) -> float:
    """Cells per second of an exported classifier (uint8 NHWC input)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    sess.run(None, {"image": x})
    best = min(_timed(sess, x) for _ in range(repeats))
    return batch / best


def _timed(sess, x) -> float:
    t = time.perf_counter()
    sess.run(None, {"image": x})
    return time.perf_counter() - t


def latency_at(arch: str, size: int) -> float:
    """Cells per second of an untrained ``arch`` exported at ``size`` (weights do not change latency)."""
    import tempfile

    from leukomorph.training.nets import build_net, export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_onnx(build_net(arch, 16, size), path, size, (0.8, 0.72, 0.75), (0.15, 0.18, 0.12), 1.0, False)
        return latency(path, size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--archs", nargs="*", default=ARCHS)
    ap.add_argument("--ema-decay", type=float, default=0.99, help="0.998 (the default's) lags a short schedule")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    from leukomorph.training.card import finalize_model
    from leukomorph.training.nets import build_net
    from leukomorph.training.sources import load_sources
    from leukomorph.training.train import TrainConfig, train_classifier

    torch.set_num_threads(2)
    records = load_sources(["pbc", "deepapl"])
    out = Path(a.out)
    rows = []
    for arch in a.archs:
        run = out / arch.replace(":", "_")
        card_path = run / "arch-study.json"
        if not card_path.exists():
            cfg = TrainConfig(
                arch=arch,
                size=a.size,
                epochs=a.epochs,
                val_fraction=0.1,
                augment="strong",
                seed=0,
                ema_decay=a.ema_decay,
            )
            train_classifier(records, cfg, run, out / "cache")
            card_path = finalize_model(run, "arch-study", records, ["pbc", "deepapl"], n_boot=500)
        card = json.loads(card_path.read_text())
        m = card["metrics"]["held_out_test"]
        pbc, apl = m["pbc/pbc8"], m["deepapl/taxonomy"]
        n_params = sum(p.numel() for p in build_net(arch, 16, a.size).parameters())
        rows.append(
            (
                arch,
                n_params / 1e6,
                card["training"]["minutes"],
                pbc["accuracy"],
                pbc["ci95"]["accuracy"],
                apl["macro_f1"],
                apl["ci95"]["macro_f1"],
                apl["per_class_f1"]["blast"][0],
                m["calibration_ece"],
                latency(run / "arch-study.onnx", a.size),
                latency_at(arch, 160),
            )
        )
    print(f"\nsize {a.size} px, {a.epochs} epochs, strong augmentation, same split and seed; 2 CPU cores\n")
    print(
        "| architecture | params (M) | train min | PBC 8-class acc (95% CI) | DeepAPL macro-F1 (95% CI) | "
        f"blast F1 | ECE | cells/s at {a.size} px | cells/s at 160 px |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]:.2f} | {r[2]:.0f} | {r[3]:.3f} ({r[4][0]:.3f}–{r[4][1]:.3f}) | "
            f"{r[5]:.3f} ({r[6][0]:.3f}–{r[6][1]:.3f}) | {r[7]:.3f} | {r[8]:.3f} | {r[9]:.0f} | {r[10]:.0f} |"
        )


if __name__ == "__main__":
    main()
