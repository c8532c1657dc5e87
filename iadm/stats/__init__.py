"""Unsupervised opinions: the per-flow-key Z-score detector and the detector comparison."""
