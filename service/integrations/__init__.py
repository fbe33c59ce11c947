"""Optional adapters that run nlpmon's core inside other stream processors (each behind an extra).

- :mod:`nlpmon.integrations.faust_agent`: a Faust app (``nlpmon[faust]``).
"""
