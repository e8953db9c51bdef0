#!/bin/sh
# The compose topology's database TLS, made once per volume (`docker compose down -v` starts over):
# a local CA and a certificate for the host name `postgres` it signed. It runs in the PostgreSQL
# image (which carries openssl, and whose `postgres` user must own the key) before the server.
#   /tls/ca/ca.pem                      -> every client, read-only (DATABASE__SSLROOTCERT)
#   /tls/server/server.{crt,key}        -> the server only
# The CA's key is deleted after signing, so nothing else can ever be issued from this CA.
set -eu
ca=/tls/ca/ca.pem server=/tls/server
if [ -s "$ca" ] && [ -s "$server/server.crt" ] && [ -s "$server/server.key" ]; then
    echo "database TLS: keeping the existing local CA and server certificate"
    exit 0
fi
ca_key=$(mktemp)
trap 'rm -f "$ca_key"' EXIT
new="openssl req -x509 -new -nodes -days 825 -newkey ec -pkeyopt ec_paramgen_curve:P-256"
$new -keyout "$ca_key" -out "$ca.tmp" -subj "/CN=ecs-suite local database CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
$new -keyout "$server/server.key" -out "$server/server.crt" -subj "/CN=postgres" \
    -addext "subjectAltName=DNS:postgres" -addext "basicConstraints=CA:FALSE" \
    -addext "extendedKeyUsage=serverAuth" -CA "$ca.tmp" -CAkey "$ca_key"
# PostgreSQL refuses a key that anyone but its owner can read.
chown postgres:postgres "$server/server.key" "$server/server.crt"
chmod 600 "$server/server.key"
chmod 644 "$server/server.crt" "$ca.tmp"
mv "$ca.tmp" "$ca"
echo "database TLS: made a local CA and a certificate for the host name postgres"
