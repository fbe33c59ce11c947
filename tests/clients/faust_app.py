"""A Faust app as a team that already runs Faust would write it, with nlpmon's helper plugged in.

Run by tests/clients/test_faust_adapter.py as ``python -m tests.clients.faust_app worker``; configured by
environment variables (the broker, the topic names, a data folder).
"""

from __future__ import annotations

import os

import faust

from nlpmon.integrations.faust_agent import FaustMonitor
from nlpmon.monitor.config import MonitorConfig

env = os.environ
app = faust.App(env["FAUST_TEST_APP_ID"], broker=f"kafka://{env['FAUST_TEST_BOOTSTRAP']}", web_enabled=False,
                datadir=env["FAUST_TEST_DATADIR"], consumer_auto_offset_reset="earliest",
                broker_session_timeout=6.0, broker_heartbeat_interval=1.0, topic_partitions=1)
monitor = FaustMonitor(app, topic=env["FAUST_TEST_TOPIC"], ground_truth_topic=env["FAUST_TEST_LABELS"],
                       dead_letter_topic=env["FAUST_TEST_DLQ"], port=0,
                       monitor=MonitorConfig(calibration_splits=2))


@app.agent(app.topic(env["FAUST_TEST_TOPIC"] + "-own"))
async def the_apps_own_agent(stream):  # type: ignore[no-untyped-def]
    async for _ in stream:  # the team's existing work goes on beside nlpmon's agents
        pass


if __name__ == "__main__":
    app.main()
