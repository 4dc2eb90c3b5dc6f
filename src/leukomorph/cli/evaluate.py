"""Adapter: `leukomorph evaluate` → evaluation.runner, with a progress bar."""

from __future__ import annotations

from ..evaluation.runner import run_evaluation as _run

__all__ = ["run_evaluation"]


def run_evaluation(card, split, which, out, n_boot, tta=None, labels=None, label_names="taxonomy"):
    from .main import _progress

    with _progress() as bar:
        task = bar.add_task("evaluate", total=None)
        return _run(
            card,
            split,
            which,
            out,
            n_boot,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
            tta=tta,
            labels=labels,
            label_names=label_names,
        )
