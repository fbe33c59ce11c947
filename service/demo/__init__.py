"""Synthetic NER prediction traffic for the demo and the tests (seeded, no data files needed)."""

from .generator import SyntheticStream, generate_events

__all__ = ["SyntheticStream", "generate_events"]
