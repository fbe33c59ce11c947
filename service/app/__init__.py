"""``nlpmon run``: the Kafka service, wired from the pure core and the thin shells around it.

- ``settings``: one validated settings object (flags > ``NLPMON_*`` environment > YAML file > defaults).
- ``processor``: the per-partition processor that hands Kafka records to a ``MonitorSet``.
- ``service``: the process: embedded broker when none is configured, consumer loop, HTTP, progress.
- ``demo``: the synthetic publisher behind ``nlpmon demo`` and ``nlpmon run --demo``.
"""
