"""Throughput of `leukomorph analyze` on N single-cell crops (default 1,000) on this machine.

Usage: python benchmarks/throughput.py [--n 1000] [--threads 0]
Crops are real 192 px WebP files from ../shared/data (pbc + deepapl; $LEUKOMORPH_DATA overrides),
linked into a temporary folder; synthetic 192 px PNGs are used if the data are absent.
Prints cells/s for the whole command (start-up, model load, decoding, inference, report) and
peak resident memory of the analyze process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def crops(folder: Path, n: int) -> str:
    root = Path(os.environ.get("LEUKOMORPH_DATA") or Path.cwd().parent / "shared" / "data")
    files = sorted(root.glob("pbc/images/*/*.webp")) + sorted(root.glob("deepapl/images/*/*/*.webp"))
    if files:
        random.Random(0).shuffle(files)
        for i, f in enumerate(files[:n]):
            (folder / f"{i:05d}{f.suffix}").symlink_to(f.resolve())
        return f"{min(n, len(files))} real crops from {root}"
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (192, 192, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return f"{n} synthetic 192 px PNGs"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--tta", default=None, help="override the model card's test-time augmentation")
    ap.add_argument("--model", default=None, help="model name or card path (default: the bundled default)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "cells"
        src.mkdir()
        what = crops(src, args.n)
        exe = [sys.executable, "-m", "leukomorph.cli.main"]
        cmd = [*exe, "analyze", str(src), "--out", str(Path(tmp) / "out"), "--threads", str(args.threads)]
        if args.tta:
            cmd += ["--tta", args.tta]
        if args.model:
            cmd += ["--model", args.model]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        run = json.loads((Path(tmp) / "out" / "run.json").read_text())
    n = args.n
    print(f"input: {what}; cores: {os.cpu_count()}; model: {run['models'][0]['name']}; tta: {run['models'][0]['tta']}")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| wall time, whole command (s) | {wall:.2f} |")
    print(f"| cells/s, whole command | {n / wall:.0f} |")
    print(f"| cells/s, read + classify only | {n / run['timings_s']['classify_s']:.0f} |")
    print(f"| peak RSS (MB) | {peak_mb:.0f} |")


if __name__ == "__main__":
    main()
