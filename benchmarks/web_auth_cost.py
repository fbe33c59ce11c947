"""What TLS and basic auth cost a scrape: GET /metrics on 127.0.0.1, each request on a new connection.

Prints one markdown table, every row as a ratio to plain HTTP without auth measured in the same run
(the runs interleaved): HTTPS without auth, HTTPS with basic auth and the right password (the check
cached after the first), and HTTPS with a wrong password (bcrypt at the configured cost every time, never
cached). Certificates come from the openssl command line into a temporary folder.

    .venv/bin/python benchmarks/web_auth_cost.py [--requests 40] [--cost 12]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nlpmon.observability.http import ObservabilityServer
from nlpmon.observability.web_config import load_web_config
from tests.tls_certs import bcrypt_hash, make_certs


def get(port: int, ctx: ssl.SSLContext | None, auth: str | None) -> int:
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx) if ctx is not None
            else http.client.HTTPConnection("127.0.0.1", port, timeout=30))
    try:
        conn.request("GET", "/metrics", headers={"Authorization": auth} if auth else {})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--cost", type=int, default=12)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certs(Path(tmp) / "pki")
        tls_only = Path(tmp) / "tls.yml"
        tls_only.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": str(certs.server_crt),
                                                                  "key_file": str(certs.server_key)}}))
        with_auth = Path(tmp) / "auth.yml"
        with_auth.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": str(certs.server_crt),
                                                                   "key_file": str(certs.server_key)},
                                             "basic_auth_users": {"p": bcrypt_hash("pw", args.cost)}}))
        servers = {name: ObservabilityServer(CollectorRegistry(), reports=dict, readiness=dict,
                                             last_poll=lambda: None, web=web)
                   for name, web in (("plain", None), ("tls", load_web_config(tls_only)),
                                     ("auth", load_web_config(with_auth)))}
        for s in servers.values():
            s.start()
        ctx = certs.client_context()
        right = "Basic " + base64.b64encode(b"p:pw").decode()
        wrong = "Basic " + base64.b64encode(b"p:nope").decode()
        cases = {"HTTP, no auth (reference)": ("plain", None, None, 200),
                 "HTTPS, no auth": ("tls", ctx, None, 200),
                 "HTTPS, basic auth, right password (cached)": ("auth", ctx, right, 200),
                 f"HTTPS, basic auth, wrong password (bcrypt cost {args.cost})": ("auth", ctx, wrong, 401)}
        times: dict[str, list[float]] = {k: [] for k in cases}
        try:
            for _ in range(args.requests):
                for name, (srv, c, auth, expected) in cases.items():
                    t0 = time.perf_counter()
                    assert get(servers[srv].port, c, auth) == expected, name
                    times[name].append(time.perf_counter() - t0)
        finally:
            for s in servers.values():
                s.stop()
    ref = statistics.median(times["HTTP, no auth (reference)"])
    print(f"GET /metrics, new connection each, {args.requests} requests per row, interleaved\n")
    print("| request | median ms | ratio to HTTP |")
    print("|---|---|---|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m * 1000:.2f} | {m / ref:.1f} |")


if __name__ == "__main__":
    main()
