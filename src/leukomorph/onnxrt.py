"""One way to open an ONNX model: ONNX Runtime on the CPU, quiet, optional thread count, and a
:class:`~leukomorph.errors.ModelError` naming the file when it cannot be loaded."""

from __future__ import annotations

import os

from .errors import ModelError

__all__ = ["cpu_session"]


def cpu_session(path: str | os.PathLike[str], threads: int | None = None, what: str = "model"):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{path}: cannot load ONNX {what} ({exc})") from exc
