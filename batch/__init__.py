"""`vidparse batch`: many inputs, resumable, split into segments that run here or on a Ray cluster."""
