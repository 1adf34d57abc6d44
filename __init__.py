"""vidparse: streaming video human parsing."""

__version__ = "0.1.0"
