"""TLS and basic auth of the HTTP server (``--web-config-file``, the exporter-toolkit format), on 127.0.0.1
with certificates made at test time: every endpoint needs credentials, wrong ones get 401, the optional
open /healthz, mutual TLS, TLS versions, extra headers, the bcrypt cache, and one-line config errors."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from nlpmon.app.settings import SettingsError, load_settings
from nlpmon.observability.http import ObservabilityServer
from nlpmon.observability.web_config import BasicAuth, WebConfig, WebConfigError, load_web_config
from tests.tls_certs import Certs, bcrypt_hash, make_certs

TIMEOUT = 10.0
PASSWORD = "correct horse battery staple"
#: Every kind of endpoint: metrics, probes, API, pages, static files, an unknown path.
ENDPOINTS = {"/metrics": 200, "/healthz": 200, "/readyz": 200, "/api": 200, "/api/models": 200,
             "/api/models/nope": 404, "/": 200, "/models": 200, "/models/nope": 404,
             "/static/nlpmon.js": 200, "/static/nlpmon.css": 200, "/nowhere": 404}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("pki"))


def write_config(folder: Path, certs: Certs | None, users: dict[str, str] | None = None, **extra: Any) -> Path:
    import yaml

    data: dict[str, Any] = {}
    if certs is not None:
        # relative paths: resolved from the config file's folder
        data["tls_server_config"] = {"cert_file": certs.server_crt.name, "key_file": certs.server_key.name,
                                     **extra.pop("tls", {})}
    if users:
        data["basic_auth_users"] = users
    data.update(extra)
    path = (certs.folder if certs is not None else folder) / f"web-{len(list(folder.glob('web-*')))}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def serve(config: Path, **kw: Any) -> ObservabilityServer:
    srv = ObservabilityServer(CollectorRegistry(), reports=dict, readiness=lambda: {"ok": True},
                              last_poll=lambda: 0.0, clock=lambda: 1.0, host="127.0.0.1", port=0,
                              web=load_web_config(config), **kw)
    srv.start()
    return srv


def request(srv: ObservabilityServer, path: str, ctx: ssl.SSLContext | None, user: str | None = None,
            password: str | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = (http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=TIMEOUT, context=ctx) if ctx is not None
            else http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT))
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def secured(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservabilityServer]:
    cfg = write_config(tmp_path_factory.mktemp("web"), certs, {"prometheus": bcrypt_hash(PASSWORD),
                                                               "alice": bcrypt_hash("other", cost=5)},
                       http_server_config={"headers": {"Strict-Transport-Security": "max-age=31536000",
                                                       "X-Frame-Options": "deny"}})
    srv = serve(cfg)
    try:
        yield srv
    finally:
        srv.stop()


def test_every_endpoint_needs_credentials_over_tls(secured: ObservabilityServer, certs: Certs) -> None:
    ctx = certs.client_context()
    assert secured.url.startswith("https://")
    for path, expected in ENDPOINTS.items():
        for method in ("GET", "HEAD"):
            status, headers, body = request(secured, path, ctx, method=method)
            assert status == 401, (path, method)
            assert headers["www-authenticate"].startswith('Basic realm="nlpmon"'), path
            assert (body == b"") == (method == "HEAD")
            assert headers["strict-transport-security"] == "max-age=31536000"
            assert request(secured, path, ctx, "prometheus", "wrong", method)[0] == 401, path
            assert request(secured, path, ctx, "nobody", PASSWORD, method)[0] == 401, path
            assert request(secured, path, ctx, "prometheus", PASSWORD, method)[0] == expected, (path, method)
    status, headers, _ = request(secured, "/", ctx, "alice", "other")  # another user with another bcrypt cost
    assert status == 200 and headers["x-frame-options"] == "deny"


def test_malformed_authorization_headers_are_401(secured: ObservabilityServer, certs: Certs) -> None:
    ctx = certs.client_context()
    for value in ("Bearer abc", "Basic", "Basic !!!not-base64", "Basic " + base64.b64encode(b"no-colon").decode(),
                  "Basic " + base64.b64encode(b":" + PASSWORD.encode()).decode()):
        conn = http.client.HTTPSConnection("127.0.0.1", secured.port, timeout=TIMEOUT, context=ctx)
        try:
            conn.request("GET", "/metrics", headers={"Authorization": value})
            assert conn.getresponse().status == 401, value
        finally:
            conn.close()


def test_plain_http_and_untrusted_clients_do_not_break_the_server(secured: ObservabilityServer,
                                                                  certs: Certs) -> None:
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
        request(secured, "/metrics", None)  # plain HTTP on the TLS port: no answer, connection closed
    with socket.create_connection(("127.0.0.1", secured.port), timeout=TIMEOUT) as s:
        s.sendall(b"\x16\x03\x01 garbage")  # a broken handshake
    with pytest.raises(ssl.SSLCertVerificationError):
        request(secured, "/metrics", ssl.create_default_context())  # a client that does not trust our CA
    assert request(secured, "/metrics", certs.client_context(), "prometheus", PASSWORD)[0] == 200


def test_open_healthz_leaves_only_healthz_without_auth(certs: Certs, tmp_path: Path) -> None:
    srv = serve(write_config(tmp_path, certs, {"u": bcrypt_hash("p")}), open_healthz=True)
    try:
        ctx = certs.client_context()
        assert request(srv, "/healthz", ctx)[0] == 200
        assert request(srv, "/healthz/", ctx)[0] == 200
        for path in set(ENDPOINTS) - {"/healthz"}:
            assert request(srv, path, ctx)[0] == 401, path
    finally:
        srv.stop()


def test_auth_without_tls_and_the_default_no_auth(tmp_path: Path) -> None:
    srv = serve(write_config(tmp_path, None, {"u": bcrypt_hash("p")}))
    try:
        assert srv.url.startswith("http://")
        assert request(srv, "/metrics", None)[0] == 401
        assert request(srv, "/metrics", None, "u", "p")[0] == 200
    finally:
        srv.stop()
    plain = ObservabilityServer(CollectorRegistry(), reports=dict, readiness=dict, last_poll=lambda: None)
    plain.start()
    try:
        assert request(plain, "/metrics", None)[0] == 200  # no web config: as before, open
    finally:
        plain.stop()


def test_mutual_tls(certs: Certs, tmp_path: Path) -> None:
    srv = serve(write_config(tmp_path, certs, tls={"client_ca_file": certs.ca.name}))  # RequireAndVerify
    try:
        assert request(srv, "/metrics", certs.client_context(with_client_cert=True))[0] == 200
        for ctx in (certs.client_context(), certs.client_context(stranger=True)):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                request(srv, "/metrics", ctx)
    finally:
        srv.stop()
    srv = serve(write_config(tmp_path, certs, tls={"client_ca_file": certs.ca.name,
                                                   "client_auth_type": "VerifyClientCertIfGiven"}))
    try:
        assert request(srv, "/metrics", certs.client_context())[0] == 200
        assert request(srv, "/metrics", certs.client_context(with_client_cert=True))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(srv, "/metrics", certs.client_context(stranger=True))
    finally:
        srv.stop()


def test_min_version_is_enforced(certs: Certs, tmp_path: Path) -> None:
    srv = serve(write_config(tmp_path, certs, tls={"min_version": "TLS13"}))
    try:
        old = certs.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(srv, "/metrics", old)
        assert request(srv, "/metrics", certs.client_context())[0] == 200
    finally:
        srv.stop()


def test_successful_checks_are_cached_failures_are_not() -> None:
    auth = BasicAuth({"u": bcrypt_hash("p").encode(), "v": bcrypt_hash("q", cost=5).encode()}, cache_size=1)

    def header(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert auth.check(header("u", "p")) and auth.check(header("u", "p")) and auth.bcrypt_checks == 1
    assert not auth.check(header("u", "x")) and not auth.check(header("u", "x")) and auth.bcrypt_checks == 3
    assert not auth.check(header("ghost", "p")) and auth.bcrypt_checks == 4  # unknown user: a dummy check
    assert auth._dummy_hash().startswith(b"$2b$05$")  # at the largest configured cost
    assert auth.check(header("v", "q")) and auth.bcrypt_checks == 5  # evicts u:p (cache of one)
    assert auth.check(header("u", "p")) and auth.bcrypt_checks == 6
    assert len(auth._ok) == 1


def test_bcrypt_cost_is_honoured() -> None:
    for cost in (4, 6):
        hashed = bcrypt_hash("pw", cost)
        assert hashed.startswith(f"$2b$0{cost}$")
        auth = BasicAuth({"u": hashed.encode()})
        assert auth.check("Basic " + base64.b64encode(b"u:pw").decode())
    # a $2y$ hash (htpasswd -B) is accepted too
    y = bcrypt_hash("pw").replace("$2b$", "$2y$", 1)
    assert BasicAuth({"u": y.encode()}).check("Basic " + base64.b64encode(b"u:pw").decode())


@pytest.mark.parametrize("data, where", [
    ({"tls_server_config": {"cert_file": "server.crt"}}, "tls_server_config.key_file: required"),
    ({"tls_server_config": {"cert_file": "nope.crt", "key_file": "server.key"}},
     "tls_server_config.cert_file: file not found"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "client.key"}},
     "tls_server_config.cert_file/key_file: cannot load"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "min_version": "TLS9"}},
     "tls_server_config.min_version: 'TLS9'"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "cipher_suites": ["x"]}},
     "tls_server_config.cipher_suites: not supported"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key",
                            "client_auth_type": "RequireAnyClientCert", "client_ca_file": "ca.crt"}},
     "tls_server_config.client_auth_type: RequireAnyClientCert is not supported"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key",
                            "client_auth_type": "RequireAndVerifyClientCert"}},
     "tls_server_config.client_ca_file: required"),
    ({"basic_auth_users": {"bob": "plaintext"}}, "basic_auth_users.bob: not a bcrypt hash"),
    ({"basic_auth_users": ["bob"]}, "basic_auth_users: must be a mapping"),
    ({"http_server_config": {"headers": {"Set-Cookie": "x"}}}, "http_server_config.headers.Set-Cookie: not an"),
    ({"http_server_config": {"headers": {"X-Frame-Options": "allow"}}}, "http_server_config.headers.X-Frame"),
    ({"basic_auth": {}}, "basic_auth: unknown key"),
])
def test_bad_web_config_is_one_line_naming_the_key(certs: Certs, data: dict[str, Any], where: str) -> None:
    import yaml

    path = certs.folder / "bad.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(WebConfigError) as err:
        load_web_config(path)
    assert where in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


def test_settings_refuse_a_bad_web_config_file_in_one_line(certs: Certs, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "web.yml"
    bad.write_text("basic_auth_users: {bob: plaintext}\n")
    monkeypatch.setenv("NLPMON_WEB_CONFIG_FILE", str(bad))
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "setting web_config_file" in str(err.value) and "basic_auth_users.bob" in str(err.value)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("NLPMON_WEB_CONFIG_FILE", str(tmp_path / "missing.yml"))
    with pytest.raises(SettingsError, match="cannot read it"):
        load_settings()
    good = write_config(tmp_path, certs, {"u": bcrypt_hash("p")})
    monkeypatch.setenv("NLPMON_WEB_CONFIG_FILE", str(good))
    web = load_settings().web_config()
    assert isinstance(web, WebConfig) and web.tls is not None and web.tls.cert_file == certs.server_crt
    assert list(web.users) == ["u"]
