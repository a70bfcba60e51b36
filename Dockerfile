# syntax=docker/dockerfile:1
# botsession-operator: one image, entrypoint `botsession` (operator | api | migrate).
# Build stage: wheels only; the final stage has no compilers, no pip cache, no sources.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sessions ./sessions
COPY controller ./controller
COPY api ./api
COPY cli ./cli
COPY devstack ./devstack
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 botsession \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin botsession
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels botsession-operator \
 && rm -rf /wheels
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8080 9090
ENTRYPOINT ["botsession"]
CMD ["operator"]
