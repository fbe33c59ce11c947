"""Which librdkafka versions can talk to the embedded Tansu broker: produce one keyed message, consume it.

Each confluent-kafka wheel bundles the librdkafka of the same version, so this installs the given
confluent-kafka versions from PyPI into temporary folders (``pip install --target``, no dependencies) and
runs one probe per version in its own process against a fresh embedded broker. Prints a markdown table.

    .venv/bin/python scripts/librdkafka_compat.py 2.0.2 2.1.1 2.2.0 2.4.0 2.16.1
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from nlpmon.kafka.broker import EmbeddedBroker

PROBE = r'''
import sys, time, uuid
import confluent_kafka as ck
b, topic = sys.argv[1], "probe-" + uuid.uuid4().hex[:6]
p = ck.Producer({"bootstrap.servers": b, "message.timeout.ms": 8000})
acks = []
p.produce(topic, b"v", key=b"k", on_delivery=lambda err, msg: acks.append(err))
p.flush(10)
got = None
if acks == [None]:
    c = ck.Consumer({"bootstrap.servers": b, "group.id": "g-" + topic, "auto.offset.reset": "earliest",
                     "session.timeout.ms": 6000})
    c.subscribe([topic])
    t0 = time.time()
    while got is None and time.time() - t0 < 20:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got = (m.key(), m.value())
    c.close()
print(f"| {ck.libversion()[0]} | {'ok' if acks == [None] else 'fails'} | {'ok' if got == (b'k', b'v') else 'fails'} |")
'''


def main() -> None:
    versions = sys.argv[1:] or ["2.0.2", "2.1.1", "2.2.0", "2.4.0"]
    print("| librdkafka (confluent-kafka wheel) | produce | consume (group) | first error |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_path=Path(tmp) / "tansu.log") as broker:
        for version in versions:
            target = Path(tmp) / f"ck-{version}"
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
                            "--target", str(target), f"confluent-kafka=={version}"], check=True,
                           capture_output=True)
            env = {**os.environ, "PYTHONPATH": str(target)}
            out = subprocess.run([sys.executable, "-c", PROBE, broker.bootstrap_servers], env=env,
                                 capture_output=True, text=True, timeout=120)
            row = next((x for x in out.stdout.splitlines() if x.startswith("|")), f"| {version} | fails | fails |")
            logged = [x.split(": ", 1)[-1] for x in out.stderr.splitlines() if x.startswith("%")]
            print(f"{row} {(logged[0] if logged else '').replace('|', '/')[:100]} |")


if __name__ == "__main__":
    main()
