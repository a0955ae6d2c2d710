"""Diffusion methods, one module per method family (registered on import)."""
