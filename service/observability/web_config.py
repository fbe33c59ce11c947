"""The web configuration file of ``nlpmon run`` (``--web-config-file``): TLS and basic auth for every endpoint.

The format is the Prometheus exporter-toolkit's (the ``--web.config.file`` of Prometheus, Alertmanager and
node_exporter), so one file and one habit serve the whole stack::

    tls_server_config:
      cert_file: server.crt            # relative paths: from the web config file's folder
      key_file: server.key
      client_ca_file: ca.crt           # optional: mutual TLS
      client_auth_type: RequireAndVerifyClientCert   # default when client_ca_file is set; else NoClientCert
      min_version: TLS12               # TLS10, TLS11, TLS12 (default), TLS13
      max_version: TLS13               # optional
    http_server_config:
      headers:                         # added to every response (exporter-toolkit's allowed set)
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:                  # user: bcrypt hash (htpasswd -nBC 12 user, or python -m bcrypt-style)
      prometheus: $2b$12$...

What nlpmon does not do, and refuses with a one-line error rather than ignore: ``cipher_suites`` and
``curve_preferences`` (Go names; Python's ssl defaults apply), ``client_allowed_sans``, and the client auth
types ``RequestClientCert`` / ``RequireAnyClientCert`` (Python's ssl verifies every client certificate it
asks for). ``http2`` and ``prefer_server_cipher_suites`` are accepted; nlpmon speaks HTTP/1.1 only.

Parsing is strict: an unknown key, a missing file, a malformed bcrypt hash or a certificate that does not
load stops the service with one line naming the key (:class:`WebConfigError`). The file is read once at
start-up; a change (a renewed certificate) takes a restart.

Basic auth uses the ``bcrypt`` package (each hash's own cost is honoured) and never home-made crypto.
A successful (user, password) pair is remembered by the SHA-256 of user, password and hash in a small
bounded dict, so a scrape every second pays bcrypt once, not every time; failures are never cached. An
unknown user pays one bcrypt check against a dummy hash of the largest configured cost, so response time
does not tell which users exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from ..errors import UserError


class WebConfigError(UserError, ValueError):
    """The web configuration file is invalid; the message is one line naming the key."""


TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
#: exporter-toolkit's headers and, where it restricts them, their allowed values (lower case).
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None, "Content-Security-Policy": None,
}
TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version",
            "prefer_server_cipher_suites"}
TLS_REFUSED = {"cipher_suites": "Python's ssl default ciphers apply",
               "curve_preferences": "Python's ssl default curves apply",
               "client_allowed_sans": "restrict clients by the CA that signs their certificates",
               "cert": "give the certificate as cert_file", "key": "give the key as key_file",
               "client_ca": "give the CA as client_ca_file"}
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
#: Successful (user, password) checks remembered; the oldest leaves first.
AUTH_CACHE_SIZE = 100
REALM = "nlpmon"


@dataclass(frozen=True)
class TlsConfig:
    """``tls_server_config``: absolute paths, resolved versions and client verification mode."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion | None = None

    def context(self) -> ssl.SSLContext:
        """A server SSLContext with the certificate, key, client CA and versions loaded.

        Raises WebConfigError (naming the key) when a file does not load."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = self.min_version
        if self.max_version is not None:
            ctx.maximum_version = self.max_version
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"tls_server_config.cert_file/key_file: cannot load {self.cert_file} with "
                                 f"{self.key_file}: {_reason(exc)}") from None
        if self.client_ca_file is not None:
            try:
                ctx.load_verify_locations(cafile=str(self.client_ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise WebConfigError(f"tls_server_config.client_ca_file: cannot load {self.client_ca_file}: "
                                     f"{_reason(exc)}") from None
        ctx.verify_mode = self.client_auth
        return ctx


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes; thread-safe (see the module docstring)."""

    def __init__(self, users: dict[str, bytes], cache_size: int = AUTH_CACHE_SIZE) -> None:
        self.users = dict(users)
        self.cache_size = cache_size
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        # made now (one bcrypt hash at the largest configured cost), so that no request pays for it
        cost = max((int(h[4:6]) for h in self.users.values()), default=10)
        self._dummy = bcrypt.hashpw(b"not a password of anyone", bcrypt.gensalt(rounds=cost))
        self.bcrypt_checks = 0  # how many times bcrypt ran (the cache's effect, for tests)

    def _dummy_hash(self) -> bytes:
        return self._dummy

    def check(self, authorization: str | None) -> bool:
        """True when the header carries a configured user and the password matching its hash."""
        if not authorization or authorization[:6].lower() != "basic ":
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user_b, sep, password = decoded.partition(b":")
        if not sep:
            return False
        user = user_b.decode("utf-8", "replace")
        hashed = self.users.get(user)
        key = hashlib.sha256(b"\0".join([user_b, password, hashed or b""])).digest()
        with self._lock:
            if hashed is not None and key in self._ok:
                self._ok.move_to_end(key)
                return True
        with self._lock:
            self.bcrypt_checks += 1
        ok = bcrypt.checkpw(password, hashed if hashed is not None else self._dummy_hash()) and hashed is not None
        if ok:
            with self._lock:
                self._ok[key] = None
                while len(self._ok) > self.cache_size:
                    self._ok.popitem(last=False)
        return ok


@dataclass(frozen=True)
class WebConfig:
    """A parsed web configuration file: TLS (or None: plain HTTP), basic-auth users, extra headers."""

    source: Path
    tls: TlsConfig | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def ssl_context(self) -> ssl.SSLContext | None:
        return self.tls.context() if self.tls is not None else None

    def basic_auth(self) -> BasicAuth | None:
        return BasicAuth(self.users) if self.users else None


def load_web_config(path: str | Path) -> WebConfig:
    """Parse and check ``path`` (loads the certificates once to report a bad one now, not at the first
    request). Raises WebConfigError with one line naming the key."""
    p = Path(path)
    where = f"web config {p}"
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise WebConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise WebConfigError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(f"{where}: must be a mapping with tls_server_config, http_server_config, "
                             "basic_auth_users")
    try:
        return _parse(p, data)
    except WebConfigError as exc:
        raise WebConfigError(f"{where}: {exc}") from None


def _parse(p: Path, data: dict[str, Any]) -> WebConfig:
    unknown = sorted(set(map(str, data)) - {"tls_server_config", "http_server_config", "basic_auth_users"})
    if unknown:
        raise WebConfigError(f"{unknown[0]}: unknown key; allowed: tls_server_config, http_server_config, "
                             "basic_auth_users")
    tls = _tls(p.parent, _mapping(data, "tls_server_config"))
    http = _mapping(data, "http_server_config")
    bad = sorted(set(map(str, http)) - {"headers", "http2"})
    if bad:
        raise WebConfigError(f"http_server_config.{bad[0]}: unknown key; allowed: headers, http2")
    if "http2" in http and not isinstance(http["http2"], bool):
        raise WebConfigError("http_server_config.http2: must be true or false")
    headers = _headers(_mapping(http, "headers", "http_server_config."))
    users = _users(_mapping(data, "basic_auth_users"))
    config = WebConfig(source=p, tls=tls, users=users, headers=headers)
    config.ssl_context()  # a certificate that does not load is a start-up error
    return config


def _mapping(data: dict[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{prefix}{key}: must be a mapping, got {type(value).__name__}")
    return value


def _tls(folder: Path, t: dict[str, Any]) -> TlsConfig | None:
    if not t:
        return None
    for key in t:
        if key in TLS_REFUSED:
            raise WebConfigError(f"tls_server_config.{key}: not supported by nlpmon ({TLS_REFUSED[key]}); remove it")
        if key not in TLS_KEYS:
            raise WebConfigError(f"tls_server_config.{key}: unknown key; allowed: {', '.join(sorted(TLS_KEYS))}")

    def path(key: str, required: bool) -> Path | None:
        raw = t.get(key)
        if raw is None or raw == "":
            if required:
                raise WebConfigError(f"tls_server_config.{key}: required when tls_server_config is given")
            return None
        if not isinstance(raw, str):
            raise WebConfigError(f"tls_server_config.{key}: must be a file path")
        full = Path(raw) if Path(raw).is_absolute() else folder / raw
        if not full.is_file():
            raise WebConfigError(f"tls_server_config.{key}: file not found: {full}")
        return full

    def version(key: str, default: str | None) -> ssl.TLSVersion | None:
        raw = t.get(key, default)
        if raw is None:
            return None
        if raw not in TLS_VERSIONS:
            raise WebConfigError(f"tls_server_config.{key}: {raw!r} is not one of {', '.join(TLS_VERSIONS)}")
        return TLS_VERSIONS[raw]

    cert, cert_key = path("cert_file", True), path("key_file", True)
    ca = path("client_ca_file", False)
    auth_name = t.get("client_auth_type") or ("RequireAndVerifyClientCert" if ca is not None else "NoClientCert")
    if auth_name in UNSUPPORTED_CLIENT_AUTH:
        raise WebConfigError(f"tls_server_config.client_auth_type: {auth_name} is not supported (Python's ssl "
                             "verifies every client certificate it asks for); use VerifyClientCertIfGiven or "
                             "RequireAndVerifyClientCert with client_ca_file")
    if auth_name not in CLIENT_AUTH:
        raise WebConfigError(f"tls_server_config.client_auth_type: {auth_name!r} is not one of "
                             f"{', '.join([*CLIENT_AUTH, *UNSUPPORTED_CLIENT_AUTH])}")
    if CLIENT_AUTH[auth_name] != ssl.CERT_NONE and ca is None:
        raise WebConfigError(f"tls_server_config.client_ca_file: required with client_auth_type {auth_name}")
    low, high = version("min_version", "TLS12"), version("max_version", None)
    assert low is not None and cert is not None and cert_key is not None
    if high is not None and high < low:
        raise WebConfigError("tls_server_config.max_version: lower than min_version")
    if "prefer_server_cipher_suites" in t and not isinstance(t["prefer_server_cipher_suites"], bool):
        raise WebConfigError("tls_server_config.prefer_server_cipher_suites: must be true or false")
    return TlsConfig(cert, cert_key, ca, CLIENT_AUTH[auth_name], low, high)


def _headers(h: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    canonical = {name.lower(): name for name in ALLOWED_HEADERS}
    for raw, value in h.items():
        name = canonical.get(str(raw).lower())
        if name is None:
            raise WebConfigError(f"http_server_config.headers.{raw}: not an allowed header; allowed: "
                                 f"{', '.join(ALLOWED_HEADERS)}")
        allowed = ALLOWED_HEADERS[name]
        if not isinstance(value, str) or not value or "\n" in value or "\r" in value:
            raise WebConfigError(f"http_server_config.headers.{raw}: must be a one-line string")
        if allowed is not None and value.lower() not in allowed:
            raise WebConfigError(f"http_server_config.headers.{raw}: {value!r} is not one of {', '.join(allowed)}")
        out[name] = value
    return out


def _users(u: dict[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for user, hashed in u.items():
        name = str(user)
        if not name or ":" in name:
            raise WebConfigError(f"basic_auth_users.{name}: a user name must be non-empty and hold no ':'")
        m = BCRYPT_HASH.match(hashed) if isinstance(hashed, str) else None
        if m is None or not 4 <= int(m.group(1)) <= 31:
            raise WebConfigError(f"basic_auth_users.{name}: not a bcrypt hash ($2b$<cost>$...; make one with "
                                 "htpasswd -nBC 12 USER, or python -c \"import bcrypt; "
                                 "print(bcrypt.hashpw(b'PASSWORD', bcrypt.gensalt(12)).decode())\")")
        out[name] = hashed.encode()
    return out


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).replace("_", " ").lower()
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
