#!/usr/bin/env bash
# Makes what the secured compose stack mounts (nothing of it is committed; `make certs` runs this):
#
#   deploy/web/tls/ca.crt, ca.key       a private CA (two years)
#   deploy/web/tls/server.crt, .key     nlpmon's certificate, for the names nlpmon, localhost and 127.0.0.1
#   deploy/web/prometheus.password      a random password for Prometheus' scrape (basic_auth.password_file)
#   deploy/web/web-config.yml           deploy/web/web-config.example.yml with that password's bcrypt hash
#
# Usage: scripts/make-web-certs.sh [OUT_DIR (deploy/web)] [PYTHON with bcrypt (.venv/bin/python)]
# Existing files are kept (delete them to renew). Needs the openssl command line.
set -euo pipefail
out=${1:-deploy/web}
py=${2:-.venv/bin/python}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out/tls"
cd "$out"
umask 077
if [ ! -f tls/ca.crt ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 730 \
        -keyout tls/ca.key -out tls/ca.crt -subj "/CN=nlpmon private CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
if [ ! -f tls/server.crt ]; then
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout tls/server.key \
        -out tls/server.csr -subj "/CN=nlpmon" 2>/dev/null
    printf 'subjectAltName=DNS:nlpmon,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
        > tls/server.ext
    openssl x509 -req -in tls/server.csr -CA tls/ca.crt -CAkey tls/ca.key -CAcreateserial -days 730 \
        -extfile tls/server.ext -out tls/server.crt 2>/dev/null
    rm -f tls/server.csr tls/server.ext
fi
if [ ! -f prometheus.password ]; then
    openssl rand -hex 24 > prometheus.password
fi
if [ ! -f web-config.yml ]; then
    "$py" - "$here/deploy/web/web-config.example.yml" prometheus.password web-config.yml <<'PY'
import sys

import bcrypt

template, password_file, out = sys.argv[1:]
password = open(password_file).read().strip().encode()
hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=12)).decode()
text = open(template).read().replace("$BCRYPT_HASH_OF_PROMETHEUS_PASSWORD", hashed)
open(out, "w").write(text)
PY
fi
# the containers run as other users (nlpmon 10001, prometheus 65534): readable, in a folder only you write
chmod 644 tls/ca.crt tls/server.crt tls/server.key prometheus.password web-config.yml
echo "make-web-certs: $out/web-config.yml, $out/tls/{ca,server}.crt, $out/prometheus.password"
