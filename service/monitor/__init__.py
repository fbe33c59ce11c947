"""The pure per-model monitor, the set of monitors that routes a batch, reference profiles and page evidence."""
