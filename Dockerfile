# The `fusion` command (worker, topics, simulate, tail, replay, rules) in one image.
#   docker build -t border-fusion .
#   docker run --rm border-fusion rules check
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install from a scratch copy of the sources, then drop it: the image runs the installed
# package only, so a file missing from the package fails here, not in production.
COPY pyproject.toml /src/
COPY schemas /src/schemas
COPY engine /src/engine
COPY streams /src/streams
COPY interop /src/interop
RUN pip install /src && rm -rf /src

# The rules are configuration, not code: they live outside the package.
# (The default FUSION_RULES_PATH points next to the installed package, where there are none.)
RUN useradd --system --uid 10001 --user-group --home-dir /app --create-home fusion
WORKDIR /app
COPY --chown=fusion:fusion rules /app/rules
ENV FUSION_RULES_PATH=/app/rules FUSION_POLICY_PATH=/app/rules/policy.yaml
# Pseudonymisation keys are mounted here (never baked into the image).
RUN mkdir -m 700 /keys && chown fusion:fusion /keys

# Faust keeps its data directory (<app id>-data) under the working directory.
USER fusion

# Smoke test of the installed package and the rules (no broker needed).
RUN fusion rules check

# 6066: /health/live and /health/ready; 9108: Prometheus /metrics.
EXPOSE 6066 9108
ENTRYPOINT ["fusion"]
CMD ["worker"]
