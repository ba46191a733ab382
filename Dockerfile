# usher container image: multi-stage, Debian bookworm.
#   docker build -t usher:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9901:9901 --stop-timeout 45 \
#     -v "$PWD/my-conf:/etc/usher:ro" usher:0.1.0
# The image runs usher as PID 1 as the non-root user usher (uid/gid 65532,
# the runAsUser of conf/kubernetes.yaml), with /etc/usher/usher.yaml from
# conf/container.yaml (listener 0.0.0.0:8080, admin 0.0.0.0:9901). Mount a
# whole directory on /etc/usher to replace it (a file mount is never updated).
# Reload without a shell or kill in the image:
#   kubectl exec deploy/usher -- usher ctl --admin 127.0.0.1:9901 reload
#   docker exec CONTAINER usher ctl --admin 127.0.0.1:9901 reload
# See README.md, "Installing".

# --- build stage: the compiler and the -dev packages, nothing of it is kept --
FROM debian:bookworm AS build
WORKDIR /src
# scripts/deps alone first: the package layer is cached across source changes
COPY scripts/deps scripts/deps
RUN scripts/deps build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUSHER_WERROR=ON >/dev/null \
 && cmake --build /build -j2 --target usher -- --no-print-directory \
 && DESTDIR=/stage cmake --install /build --prefix /usr/local --strip

# --- runtime stage: only the shared libraries usher links, and curl for the
# HEALTHCHECK (the same list as the .deb's Depends, see scripts/package) -----
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libev4 libssl3 libyaml-0-2 libc-ares2 libjansson4 libnghttp2-14 libsystemd0 curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 usher \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin usher
COPY --from=build /stage/usr/local/bin/usher /usr/local/bin/usher
COPY --from=build /stage/usr/local/share/doc/usher /usr/local/share/doc/usher
COPY conf/container.yaml /etc/usher/usher.yaml
# a config that does not load fails the image build, not the first start
RUN chmod 0644 /etc/usher/usher.yaml && /usr/local/bin/usher -t -c /etc/usher/usher.yaml

USER 65532:65532
# 8080: listener "web"; 9901: the admin endpoints (/live /ready /status /metrics)
EXPOSE 8080 9901
# SIGTERM is usher's graceful drain (shutdown.drain_delay + shutdown.timeout,
# 5s + 30s in container.yaml): give it `docker stop -t 45` / --stop-timeout 45,
# the default 10 s would SIGKILL it in the middle of the drain.
STOPSIGNAL SIGTERM
# /live answers 200 as long as the process runs, also while it drains.
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9901/live"]
ENTRYPOINT ["/usr/local/bin/usher"]
CMD ["-c", "/etc/usher/usher.yaml"]
