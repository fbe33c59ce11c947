"""Test certificates made at test time with the openssl command line (nothing is committed).

``make_certs(folder)`` writes a CA, a server certificate for 127.0.0.1 and localhost signed by it, a client
certificate signed by it, and a client certificate signed by another CA (untrusted), all EC P-256, valid
two days. Also a bcrypt hash helper at the lowest cost (4) so tests stay fast.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Certs:
    folder: Path
    ca: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    stranger_crt: Path  # a client certificate of another CA
    stranger_key: Path

    def client_context(self, *, with_client_cert: bool = False, stranger: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if with_client_cert:
            ctx.load_cert_chain(self.client_crt, self.client_key)
        if stranger:
            ctx.load_cert_chain(self.stranger_crt, self.stranger_key)
        return ctx


def _run(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> None:
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         cwd=folder)


def _leaf(folder: Path, name: str, ca: str, ext: str) -> None:
    (folder / f"{name}.ext").write_text(ext)
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
         "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
         "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)


def make_certs(folder: Path) -> Certs:
    """Write the test PKI into ``folder`` (skips the test when openssl is missing)."""
    if OPENSSL is None:
        pytest.skip("the openssl command line is needed to make test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    _leaf(folder, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
          "basicConstraints=CA:FALSE\n")
    _leaf(folder, "client", "ca", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    _leaf(folder, "stranger", "other-ca", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    f = folder
    return Certs(f, f / "ca.crt", f / "server.crt", f / "server.key", f / "client.crt", f / "client.key",
                 f / "stranger.crt", f / "stranger.key")


def bcrypt_hash(password: str, cost: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
