"""Parsing quality: coarse-class IoU against ground-truth label maps, and label flicker on video."""
