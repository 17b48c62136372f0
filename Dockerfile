# mailcluster as a container image, built FROM scratch around the static
# binary: nothing is pulled from a registry. Build the binary first:
#
#   make build                       # CGO_ENABLED=0 go build -o bin/mailcluster ./cmd/mailcluster
#   docker build -t mailcluster:local .
#
# The image holds the binary, /etc/passwd with an unprivileged user, and the
# two folders a scratch image lacks: /tmp and the data folder (its owner is
# copied into a fresh named volume, so the node can write there).
FROM scratch

COPY deploy/image/etc/passwd deploy/image/etc/group /etc/
COPY --chown=65532:65532 deploy/image/empty/ /tmp/
COPY --chown=65532:65532 deploy/image/empty/ /var/lib/mailcluster/
COPY bin/mailcluster /usr/local/bin/mailcluster

# Unprivileged; Docker (20.10+) lets containers bind ports below 1024 anyway.
USER 65532:65532
ENV MAILCLUSTER_DATA_DIR=/var/lib/mailcluster \
    MAILCLUSTER_GOSSIP_ADDR=0.0.0.0:7946 \
    MAILCLUSTER_CLUSTER_ADDR=0.0.0.0:7947 \
    MAILCLUSTER_HTTP_ADDR=0.0.0.0:8080
VOLUME ["/var/lib/mailcluster"]
# Client ports, then gossip (TCP and UDP), the cluster port and HTTP.
EXPOSE 25 587 465 143 993 110 995 7946/tcp 7946/udp 7947 8080

ENTRYPOINT ["/usr/local/bin/mailcluster"]
CMD ["serve"]
