# RSCA Lab dashboard: gunicorn serving app:server on port 8050, default simulated survey baked in.
#   docker build -t rsca-lab .  &&  docker run --rm -p 8050:8050 rsca-lab
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    NUMPY_MADVISE_HUGEPAGE=0

RUN groupadd --system --gid 10001 rsca \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/rsca --shell /usr/sbin/nologin rsca

WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY --chown=10001:10001 rsca_core/ rsca_core/
COPY --chown=10001:10001 pages/ pages/
COPY --chown=10001:10001 assets/ assets/
COPY --chown=10001:10001 app.py ./
RUN mkdir -p /app/data && chown 10001:10001 /app/data

USER 10001:10001
# Results shared by all gunicorn workers: a filesystem cache and the background-job store in the
# private state folder /home/rsca/.local/state/rsca-lab (0700); compressions are cached beside the
# bundle in data/default/cache. Safe to expose: visitors cannot build surveys (RSCA_ALLOW_BUILD=0),
# background jobs are capped at the number of cores (RSCA_MAX_JOBS), request bodies at 1 MB.
# The README's "Hosting" section lists every variable.
ENV RSCA_CACHE_TYPE=filesystem \
    RSCA_ALLOW_BUILD=0 \
    WEB_CONCURRENCY=3

# The default simulated survey and its PCA compression, prepared once at build time.
RUN python app.py --prepare-only

EXPOSE 8050
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8050/healthz', timeout=4)"]
CMD ["gunicorn", "app:server", "--bind", "0.0.0.0:8050", "--threads", "2", "--timeout", "120", "--graceful-timeout", "30", "--access-logfile", "-"]
