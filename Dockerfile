# Build stage: a C compiler for the native NDJSON -> CSV pass (the runtime image has none).
FROM python:3.11.7-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.lock pyproject.toml setup.py README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -c "import zipfile, glob, sys; w = glob.glob('/wheels/*.whl')[0]; sys.exit(not any(n.endswith('.so') for n in zipfile.ZipFile(w).namelist()))"

FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# /data: the output directory; /state: the state directory with a bucket as output
# (BEA_STATE_DIR=/state). Both exist here, owned by the image's user, so that a named volume
# mounted on either is created writable for it.
RUN useradd --create-home --uid 10001 app \
    && mkdir /data /state && chown app:app /data /state
WORKDIR /app
COPY requirements.lock ./
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir -r requirements.lock && pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels

USER app
VOLUME ["/data", "/state"]
# Configured through the environment (every option has a BEA_ variable), so that the health check
# reads the same port as the server: set BEA_PORT, not --port, to move it.
ENV BEA_OUTPUT=/data BEA_HOST=0.0.0.0 BEA_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"BEA_PORT\"]}/healthz', timeout=2)"
ENTRYPOINT ["batched-event-api"]
CMD ["serve"]
