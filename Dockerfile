# syntax=docker/dockerfile:1
# meshfs: a static binary on a small base. The mount needs /dev/fuse and
# CAP_SYS_ADMIN inside the container (see README, "Containers").
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/meshfs ./cmd/meshfs

FROM debian:bookworm-slim
# fuse3 brings fusermount3 for non-root mounts; ca-certificates is not
# needed (meshfs dials only the peers it is given).
RUN apt-get update && apt-get install -y --no-install-recommends fuse3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/meshfs /usr/local/bin/meshfs
VOLUME ["/data"]
EXPOSE 8070/tcp 8070/udp
ENV MESHFS_DATA_DIR=/data MESHFS_API=127.0.0.1:8080
ENTRYPOINT ["/usr/local/bin/meshfs"]
CMD ["daemon", "--mount", "/mnt/net"]
