#!/usr/bin/env bash
# Development PKI and secrets for a secure Neo cluster (docker-compose.secure.yml).
#
#   bash scripts/dev-certs.sh [DIR]        # default DIR: ./dev-certs
#
# Writes, with openssl (nothing here is fit for production: the CA key sits next to
# the certificates it signs):
#   ca.pem, ca.key                    the development CA
#   node1..3.pem / .key               node certificates: serverAuth + clientAuth, SANs
#                                     neoN, neo (the shared name), localhost, 127.0.0.1,
#                                     172.28.71.1N, and the URI SAN neo-node:N that names
#                                     node N on the cluster port (docs/security.md): the
#                                     same certificate serves the client port (TLS) and
#                                     the cluster port (mTLS)
#   admin.pem / admin.key             a client certificate whose CN is `admin` (the
#                                     superuser of docker-compose.secure.yml): `neo
#                                     --tls-cert admin.pem --tls-key admin.key`
#   jwt.secret                        the HS256 secret the nodes verify tokens with
#   admin.jwt                         an HS256 token for `admin`, valid for 30 days
# Existing files are kept (rerun after deleting DIR to start over), except a node
# certificate without its neo-node:N SAN (made by an older version of this script),
# which is made again.
set -euo pipefail

dir="${1:-dev-certs}"
mkdir -p "$dir"
cd "$dir"
umask 077

if [[ ! -f ca.pem ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -subj "/CN=Neo development CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

# leaf NAME CN SAN EKU
leaf() {
  local name=$1 cn=$2 san=$3 eku=$4
  [[ -f "$name.pem" ]] && return 0
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$cn" -keyout "$name.key.tmp" -out "$name.csr" 2>/dev/null
  # rustls wants PKCS#8 or SEC1; openssl 3 writes PKCS#8 already.
  mv "$name.key.tmp" "$name.key"
  local ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } >"$ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 825 -out "$name.pem" -extfile "$ext" 2>/dev/null
  rm -f "$name.csr" "$ext"
}

for n in 1 2 3; do
  if [[ -f "node$n.pem" ]] &&
    ! openssl x509 -in "node$n.pem" -noout -ext subjectAltName 2>/dev/null |
    grep -q "URI:neo-node:$n\b"; then
    echo "node$n.pem names no node id (URI SAN neo-node:$n): making it again" >&2
    rm -f "node$n.pem" "node$n.key"
  fi
  leaf "node$n" "neo$n" \
    "DNS:neo$n,DNS:neo,DNS:localhost,IP:127.0.0.1,IP:172.28.71.1$n,URI:neo-node:$n" \
    "serverAuth,clientAuth"
done
leaf admin admin "" clientAuth

if [[ ! -f jwt.secret ]]; then
  openssl rand -hex 32 >jwt.secret
fi

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
if [[ ! -f admin.jwt ]]; then
  now=$(date +%s)
  header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
  payload=$(printf '{"sub":"admin","iss":"neo-dev","iat":%d,"exp":%d}' "$now" $((now + 30 * 86400)) | b64url)
  secret=$(tr -d '\n' <jwt.secret)
  signature=$(printf '%s.%s' "$header" "$payload" |
    openssl dgst -sha256 -mac HMAC -macopt "key:$secret" -binary | b64url)
  printf '%s.%s.%s\n' "$header" "$payload" "$signature" >admin.jwt
fi

# The node image runs as root in a scratch container; the files are mounted read-only.
chmod 0644 ./*.pem ./*.key jwt.secret admin.jwt
rm -f ca.srl
echo "development PKI in $(pwd)"
