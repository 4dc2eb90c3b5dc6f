"""Training (needs the ``train`` extra: torch; timm optional). Imports stages, never the reverse."""
