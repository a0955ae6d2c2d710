"""Baselines (timm classifiers, ...), one module per family (registered on import)."""
