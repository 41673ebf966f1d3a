# Worker image for docker-compose.yml (not used by `make demo` or CI).
FROM python:3.11-slim
WORKDIR /srv/fraud-detection
COPY . .
RUN pip install --no-cache-dir .
ENV FRAUD_WEB_BIND=127.0.0.1
CMD ["faust", "-A", "app", "worker", "-l", "info"]
