# statecast: the same install step as the Makefile (`make install`), so what CI proves holds here.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 statecast

WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY requirements/ requirements/
COPY protocol/ protocol/
COPY server/ server/
COPY loadtest/ loadtest/
COPY src/ src/
RUN make install VENV=/opt/venv EXTRAS=plot && mkdir -p /app/data && chown -R statecast /app

USER statecast
ENV PATH="/opt/venv/bin:$PATH" \
    STATECAST_HOST=0.0.0.0 \
    STATECAST_STORE=sqlite:/app/data/statecast.db
EXPOSE 8765 8766
VOLUME ["/app/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8766/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["statecast", "serve", "--host", "0.0.0.0"]
