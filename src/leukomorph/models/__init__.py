"""Name-keyed model registry (entries are model cards), offline hash-checked loading, backends."""

from .registry import DEFAULT_CASE_MODEL, DEFAULT_CLASSIFIER, ModelCard, get_card, list_cards, load_classifier

__all__ = ["DEFAULT_CASE_MODEL", "DEFAULT_CLASSIFIER", "ModelCard", "get_card", "list_cards", "load_classifier"]
