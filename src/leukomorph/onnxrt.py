"""One way to open and run an ONNX model: ONNX Runtime on the CPU, quiet, optional thread count,
and a :class:`~leukomorph.errors.ModelError` naming the file when it cannot be loaded.

Memory: ONNX Runtime keeps what a run allocated in its memory arena for the next run, which is
fast when batches keep one shape (crop mode: full batches of ``batch_size``) but grows with every
new shape. Smear fields and slides give a batch of another size per field, so the pipeline runs
them inside :func:`releasing_memory`, which hands unused arena memory back after each run. Memory
patterns (one pre-planned block per input shape) are off: they cost memory and, measured on
``analyze`` of 1,000 crops, bought no speed. Freed memory can also stay with the C library's
per-thread heaps; :func:`trim_heap` asks glibc to return it (slides call it after each chunk of
tiles).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterator

from .errors import ModelError

__all__ = ["cpu_session", "releasing_memory", "run", "trim_heap"]

_RELEASE: contextvars.ContextVar[bool] = contextvars.ContextVar("leukomorph_release_arena", default=False)
_SHRINK = None  # RunOptions asking the CPU arena to shrink after the run (made on first use)


def cpu_session(path: str | os.PathLike[str], threads: int | None = None, what: str = "model"):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.enable_mem_pattern = False
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{path}: cannot load ONNX {what} ({exc})") from exc


@contextlib.contextmanager
def releasing_memory(enabled: bool = True) -> Iterator[None]:
    """Within this block (this thread or task), :func:`run` returns unused arena memory after
    each model call: for work whose batch shapes vary (fields, slides)."""
    token = _RELEASE.set(enabled)
    try:
        yield
    finally:
        _RELEASE.reset(token)


def run(session, outputs, feed: dict):
    """``session.run(outputs, feed)``, shrinking the arena afterwards inside :func:`releasing_memory`."""
    global _SHRINK
    if not _RELEASE.get():
        return session.run(outputs, feed)
    if _SHRINK is None:
        import onnxruntime as ort

        opts = ort.RunOptions()
        opts.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        _SHRINK = opts
    return session.run(outputs, feed, _SHRINK)


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to trim
        return None


def trim_heap() -> bool:
    """Return the C heap's free memory to the operating system (glibc's ``malloc_trim``, every
    arena); False where the C library has no such call. Changes no result, only memory held."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
