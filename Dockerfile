# cloudtrail-adapter in a container: non-root, state on a volume, health on /healthz.
#
#   docker build -t cloudtrail-adapter .
#   docker run -d --name cloudtrail-adapter \
#     -v /etc/cloudtrail-adapter/config.yaml:/etc/cloudtrail-adapter/config.yaml:ro \
#     -v cloudtrail-state:/var/lib/cloudtrail-adapter \
#     -e LC_OID -e LC_INSTALLATION_KEY -e CLOUDTRAIL_BUCKET -p 127.0.0.1:9108:9108 \
#     cloudtrail-adapter
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cloudtrail_adapter ./cloudtrail_adapter
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home adapter \
    && install -d -o adapter -g adapter -m 0700 /var/lib/cloudtrail-adapter
COPY --from=build /install /usr/local
USER 10001
# Checkpoints and quarantine survive the container: keep this volume.
ENV STATE_DIRECTORY=/var/lib/cloudtrail-adapter PYTHONUNBUFFERED=1
VOLUME ["/var/lib/cloudtrail-adapter"]
EXPOSE 9108
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s CMD \
    ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
# Exec form: the daemon is PID 1 and receives SIGTERM itself (graceful stop, 30 s grace;
# give `docker stop -t 45`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["cloudtrail-adapter", "run", "--http-address", "0.0.0.0:9108"]
CMD ["/etc/cloudtrail-adapter/config.yaml"]
