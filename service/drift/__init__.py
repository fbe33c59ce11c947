"""Drift statistics: featurizers, window statistics, threshold calibration, river detectors (pure, vectorised)."""
