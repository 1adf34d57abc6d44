"""Weights trained for vidparse (see MODEL_CARD.md)."""
