#!/bin/sh
# Throwaway CA and broker certificate for tests and staging. NOT for production: the CA key is
# left next to the certificates, unencrypted. Production uses a CA kept offline (or a public
# certificate for the broker's DNS name) - see docs/OPERATIONS.md.
#
# usage: make-dev-ca.sh OUT_DIR [SERVER_NAME ...]
#   OUT_DIR        created if missing; gets ca.crt ca.key server.crt server.key
#                  and client-<name>.crt/.key when IMD_DEV_CLIENTS="c1 c2" is set
#   SERVER_NAME    DNS names (or IPs) the broker is reached by; default: localhost 127.0.0.1
set -eu

out=${1:?usage: make-dev-ca.sh OUT_DIR [SERVER_NAME ...]}
shift
[ "$#" -gt 0 ] || set -- localhost 127.0.0.1
days=${IMD_DEV_CA_DAYS:-30}
command -v openssl >/dev/null || { echo "make-dev-ca.sh: openssl not found" >&2; exit 1; }

mkdir -p "$out"
umask 077
cd "$out"

san=""
for name in "$@"; do
    case $name in
        *[!0-9.]*) entry="DNS:$name" ;;   # anything but digits and dots is a DNS name
        *) entry="IP:$name" ;;
    esac
    san="${san:+$san,}$entry"
done

# EC P-256: small, fast and supported by every TLS stack a Pi or a server has.
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout ca.key -out ca.crt -days "$days" -subj "/CN=IMD dev CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null

issue() {  # issue NAME SUBJECT EXTENSIONS
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out "$1.crt" -days "$days" -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

issue server "/CN=$1" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san"

# Optional client certificates (require_certificate true): CN = the MQTT username.
for client in ${IMD_DEV_CLIENTS:-}; do
    issue "client-$client" "/CN=$client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
done

rm -f ca.srl
# The broker (user mosquitto) must read its key; certificates are public.
chmod 0644 ca.crt server.crt
chmod 0640 server.key
echo "make-dev-ca.sh: CA and server certificate for $* in $out (valid $days days)"
