#!/bin/sh
# Prepares the files docker-compose.yml reads, next to it, without touching
# existing ones:
#   mailcluster.env  a fresh cluster secret and admin token (mode 0600)
#   tls/cert.pem, tls/key.pem
#                    a self-signed certificate for the client ports (replace
#                    with your own; the nodes re-read it when it changes)
# Neither belongs in version control.
set -eu
cd "$(dirname "$0")/.."

if [ ! -e mailcluster.env ]; then
	umask 077
	{
		echo "MAILCLUSTER_SECRET=$(head -c 32 /dev/urandom | base64)"
		echo "MAILCLUSTER_ADMIN_TOKEN=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')"
		echo "MAILCLUSTER_LOG_FORMAT=text"
		echo "MAILCLUSTER_LOG_LEVEL=info"
	} > mailcluster.env
	umask 022
	echo "wrote mailcluster.env (the admin token is in it)"
fi

if [ ! -e tls/cert.pem ]; then
	mkdir -p tls
	host="${MAILCLUSTER_TLS_NAME:-localhost}"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
		-subj "/CN=$host" -addext "subjectAltName=DNS:$host,DNS:localhost,IP:127.0.0.1" \
		-keyout tls/key.pem -out tls/cert.pem 2>/dev/null
	# The nodes run as uid 65532 in the container and must read the key.
	chmod 0644 tls/cert.pem
	if [ "$(id -u)" -eq 0 ]; then chown 65532:65532 tls/key.pem; chmod 0600 tls/key.pem; else chmod 0644 tls/key.pem; fi
	echo "wrote a self-signed certificate for $host to tls/ (use your own for real clients)"
fi
