# The kclip image for the ui and trainer services of docker-compose.yml.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src src
COPY platform platform
COPY kg_loaders kg_loaders
COPY models models
COPY ui ui
RUN pip install --no-cache-dir uv && uv pip install --system --no-cache .
ENV DGLBACKEND=pytorch
