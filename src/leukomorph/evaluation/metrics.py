"""Classification metrics on exact labels, with 95% bootstrap CIs.

The bootstrap resamples *groups* (patients where known, otherwise images), so intervals reflect
patient-to-patient variation rather than pretending cells of one patient are independent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EvalReport", "bootstrap_ci", "evaluate_predictions", "format_report", "per_class_metrics"]


def _confusion(y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + p, minlength=k * k).reshape(k, k)


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(cm).astype(float)
    support = cm.sum(1).astype(float)
    predicted = cm.sum(0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(precision + np.nan_to_num(recall) > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(support > 0, f1, np.nan)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def _summary(y: np.ndarray, p: np.ndarray, k: int) -> dict[str, float]:
    cm = _confusion(y, p, k)
    m = per_class_metrics(cm)
    present = m["support"] > 0
    return {
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "macro_f1": float(np.nanmean(m["f1"][present])) if present.any() else float("nan"),
        "balanced_accuracy": float(np.nanmean(m["recall"][present])) if present.any() else float("nan"),
    }


def bootstrap_ci(
    stat: Callable[[np.ndarray], float], groups: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile CI of ``stat(indices)`` over bootstrap resamples of whole groups."""
    rng = np.random.default_rng(seed)
    ug, inv = np.unique(groups, return_inverse=True)
    members = [np.nonzero(inv == g)[0] for g in range(len(ug))]
    vals = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(ug), len(ug))
        idx = np.concatenate([members[g] for g in pick])
        v = stat(idx)
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return (float("nan"), float("nan"))
    return (float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2)))


@dataclass
class EvalReport:
    classes: list[str]
    n: int
    summary: dict[str, float]
    summary_ci: dict[str, tuple[float, float]]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    n_groups: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "n_groups": self.n_groups,
            "classes": self.classes,
            "summary": self.summary,
            "summary_ci95": {k: list(v) for k, v in self.summary_ci.items()},
            "per_class": self.per_class,
            "confusion": self.confusion,
            **self.extra,
        }


def evaluate_predictions(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    classes: Sequence[str],
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> EvalReport:
    """Metrics over ``classes`` (labels outside it count as errors via an extra 'other' column)."""
    classes = list(classes)
    k = len(classes) + 1
    idx = {c: i for i, c in enumerate(classes)}
    y = np.array([idx.get(c, k - 1) for c in y_true])
    p = np.array([idx.get(c, k - 1) for c in y_pred])
    g = np.asarray(groups if groups is not None else np.arange(len(y)).astype(str))
    cm = _confusion(y, p, k)
    m = per_class_metrics(cm)
    summary = _summary(y, p, k)
    # macro metrics are over the classes that have support (the 'other' column never does)
    ci = {key: bootstrap_ci(lambda ii, key=key: _summary(y[ii], p[ii], k)[key], g, n_boot, seed) for key in summary}
    per_class = {}
    for i, c in enumerate(classes):
        if m["support"][i] == 0 and cm[:, i].sum() == 0:
            continue

        def f1_of(ii, i=i):
            return per_class_metrics(_confusion(y[ii], p[ii], k))["f1"][i]

        lo, hi = bootstrap_ci(f1_of, g, n_boot, seed) if m["support"][i] > 0 else (float("nan"), float("nan"))
        per_class[c] = {
            "precision": float(m["precision"][i]),
            "recall": float(m["recall"][i]),
            "f1": float(m["f1"][i]),
            "f1_ci95": [lo, hi],
            "support": int(m["support"][i]),
        }
    return EvalReport(classes + ["(other)"], len(y), summary, ci, per_class, cm.tolist(), len(np.unique(g)))


def format_report(title: str, rep: EvalReport) -> str:
    lines = [f"## {title}  (n={rep.n} cells, {rep.n_groups} bootstrap groups)", ""]
    for key, v in rep.summary.items():
        lo, hi = rep.summary_ci[key]
        lines.append(f"- {key}: {v:.4f} (95% CI {lo:.4f}-{hi:.4f})")
    lines += ["", "| class | precision | recall | F1 (95% CI) | support |", "|---|---:|---:|---:|---:|"]
    for c, r in rep.per_class.items():
        lo, hi = r["f1_ci95"]
        rec = "n/a" if np.isnan(r["recall"]) else f"{r['recall']:.3f}"
        f1 = "n/a" if np.isnan(r["f1"]) else f"{r['f1']:.3f} ({lo:.3f}-{hi:.3f})"
        lines.append(f"| {c} | {r['precision']:.3f} | {rec} | {f1} | {r['support']} |")
    return "\n".join(lines)


def confusion_png(rep: EvalReport, path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(rep.confusion, float)
    keep = (cm.sum(0) + cm.sum(1)) > 0
    cm = cm[keep][:, keep]
    names = [c for c, k in zip(rep.classes, keep, strict=True) if k]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(names), 0.5 * len(names) + 1), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    int(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
