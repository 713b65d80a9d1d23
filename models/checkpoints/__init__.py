"""Shipped model checkpoints (state dicts)."""
