"""nlpmon: a streaming drift and quality monitor for NLP models in production.

Layout (one concept per subpackage):

- ``nlpmon.events``: the event contract (pydantic schema) and the fast hot-path decoder.
- ``nlpmon.sketches``: mergeable, serialisable window sketches (ring + blocks of sums).
- ``nlpmon.drift``: featurizers, window statistics, threshold calibration, river detectors.
- ``nlpmon.monitor``: the pure per-model monitor and the set of monitors that routes a batch.
- ``nlpmon.state``: the safe, versioned binary codec for profiles and snapshots.
- ``nlpmon.replay``: the backtest command, through the same code path as the service.
"""

__version__ = "0.1.0"
