"""CPU latency of candidate cell-classifier architectures and input sizes (ONNX Runtime).

    python benchmarks/arch_latency.py [--threads 2] [--batch 64]

Needs the train extra (torch) to build and export each network (random weights: latency does not
depend on them). `timm:<name>` entries need timm, which needs torchvision; on this machine
torchvision only installs with the multi-GB CUDA torch, so they are skipped when timm is absent.
Accuracy for the architectures that were trained is in the model cards (see README).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

CANDIDATES = [
    ("lm-resnet-s", 128),
    ("lm-resnet-s", 160),
    ("lm-resnet-s", 192),
    ("lm-resnet-m", 128),
    ("lm-resnet-m", 160),
    ("timm:resnet18", 160),
    ("timm:efficientnet_b0", 160),
    ("timm:convnext_atto", 160),
    ("timm:vit_tiny_patch16_224", 224),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    import torch

    from leukomorph.errors import ConfigError
    from leukomorph.training.nets import build_net, export_onnx

    torch.set_num_threads(a.threads)
    print(f"ONNX Runtime {ort.__version__}, {a.threads} threads, batch {a.batch}, no test-time augmentation\n")
    print("| architecture | input px | parameters (M) | ONNX MB | ms / cell | cells / s |")
    print("|---|---:|---:|---:|---:|---:|")
    for arch, size in CANDIDATES:
        try:
            net = build_net(arch, 16, size)
        except (ConfigError, RuntimeError, ImportError) as exc:
            print(f"| {arch} | {size} | – | – | – | skipped: {str(exc)[:60]} |")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.onnx"
            export_onnx(net, path, size, (0.8, 0.72, 0.75), (0.15, 0.18, 0.12), 1.0, with_embedding=False)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = a.threads
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            x = np.random.default_rng(0).integers(0, 255, (a.batch, size, size, 3), dtype=np.uint8)
            sess.run(None, {"image": x})
            times = []
            for _ in range(a.repeats):
                t = time.perf_counter()
                sess.run(None, {"image": x})
                times.append(time.perf_counter() - t)
            ms = 1000 * min(times) / a.batch
            mb = path.stat().st_size / 1e6
        n = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"| {arch} | {size} | {n:.2f} | {mb:.1f} | {ms:.2f} | {1000 / ms:.0f} |")


if __name__ == "__main__":
    main()
