FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir '.[postgres]'
ENV LOOKOUT_STORE__URL=sqlite:////data/lookout.db
VOLUME /data
HEALTHCHECK --interval=30s --timeout=10s CMD ["lookout", "health", "--timeout", "5"]
ENTRYPOINT ["lookout"]
CMD ["run"]
