"""Morphological attributes per cell (WBCAtt vocabulary) from the cell classifier's embedding.

One multinomial logistic head per attribute on the standardised embedding, evaluated with numpy.
The model card names the cell classifier it was fitted on (sha256): a mismatch is refused, never
silently scored. Attribute names and values are WBCAtt's (Tsutsui et al., NeurIPS 2023).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["WBCATT_ATTRIBUTES", "AttributeModel", "load_attribute_model"]

WBCATT_ATTRIBUTES = (
    "cell_size",
    "cell_shape",
    "nucleus_shape",
    "nuclear_cytoplasmic_ratio",
    "chromatin_density",
    "cytoplasm_vacuole",
    "cytoplasm_texture",
    "cytoplasm_colour",
    "granule_type",
    "granule_colour",
    "granularity",
)


@dataclass(frozen=True)
class AttributeModel:
    name: str
    version: str
    vocab: dict[str, list[str]]
    mean: np.ndarray
    scale: np.ndarray
    heads: dict[str, tuple[np.ndarray, np.ndarray]]
    depends_on: dict[str, str]
    card_path: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def predict(self, emb: np.ndarray) -> dict[str, list[tuple[str, float]]]:
        """Per attribute, (value, probability) for each row of ``emb`` (N, D)."""
        z = (np.asarray(emb, np.float64) - self.mean) / self.scale
        out = {}
        for a, (w, b) in self.heads.items():
            logit = z @ w.T + b
            p = np.exp(logit - logit.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            k = p.argmax(1)
            out[a] = [(self.vocab[a][i], float(p[j, i])) for j, i in enumerate(k)]
        return out


def load_attribute_model(name_or_path: str) -> AttributeModel:
    from ..models.registry import get_card, load_params

    card = get_card(name_or_path)
    z = load_params(card, "attribute-classification", "an attribute model")
    vocab = {a: list(v) for a, v in card.raw["vocabulary"].items()}
    heads = {a: (z[f"{a}__w"], z[f"{a}__b"]) for a in vocab}
    mean, scale = z["mean"], z["scale"]
    return AttributeModel(
        card.name, card.version, vocab, mean, scale, heads, dict(card.raw["depends_on"]), card.card_path, card.raw
    )
