"""Delayed ground truth: label events, span matching, windowed quality, the join and label-free estimates.

Pure core, like :mod:`service.monitor`: no Kafka, no HTTP, no wall clock. See
:class:`service.quality.quality_monitor.QualityMonitor`.
"""
