# Multi-stage build of the peer (sidecar) image: the daemon `cluster-sidecar` and the client
# `cluster-ctl`. The operator image joins when the operator crate lands.
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sidecar --bins

FROM debian:bookworm-slim AS sidecar
RUN useradd --system --uid 10001 --home-dir /data --create-home cluster
COPY --from=build /src/target/release/cluster-sidecar /src/target/release/cluster-ctl /usr/local/bin/
USER 10001
VOLUME /data
ENV CLUSTER_DATA_DIR=/data
# 9094: REST API; 9096: cluster swarm (consensus between peers).
EXPOSE 9094 9096
ENTRYPOINT ["/usr/local/bin/cluster-sidecar"]
