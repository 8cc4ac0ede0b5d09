# Multi-stage build of the two images the chart runs:
#   docker build --target sidecar  -t ipfs-cluster-sidecar:<version> .   (cluster-sidecar, cluster-ctl)
#   docker build --target operator -t ipfs-cluster-operator:<version> .  (cluster-operator)
# One build stage compiles both, so the dependencies they share are built once.
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sidecar --bins -p operator --bins

FROM debian:bookworm-slim AS sidecar
RUN useradd --system --uid 10001 --home-dir /data --create-home cluster
COPY --from=build /src/target/release/cluster-sidecar /src/target/release/cluster-ctl /usr/local/bin/
USER 10001
VOLUME /data
ENV CLUSTER_DATA_DIR=/data
# 9094: REST API; 9096: cluster swarm (consensus between peers).
EXPOSE 9094 9096
ENTRYPOINT ["/usr/local/bin/cluster-sidecar"]

FROM debian:bookworm-slim AS operator
RUN useradd --system --uid 10001 --no-create-home operator
COPY --from=build /src/target/release/cluster-operator /usr/local/bin/
USER 10001
# 8080: /metrics, /livez, /readyz.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cluster-operator"]
