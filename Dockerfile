# One image recipe for the three services, named by a build argument, from the repository root:
#   docker build --build-arg SERVICE=billing -t boxcostpro/billing .   (webhook-gateway, billing, notifier)
# Multi-stage, small base, non-root, exec-form entrypoint (SIGTERM reaches Python).
FROM python:3.11-slim AS build
ARG SERVICE
RUN test -n "$SERVICE" || { echo "build with --build-arg SERVICE=webhook-gateway|billing|notifier" >&2; exit 1; }
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Every package from the lock: exact versions, hashes checked, nothing resolved at build time.
COPY requirements/services.lock ./
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --require-hashes --no-deps -r services.lock
# Generated protobuf code is built here from protos/, never copied from a checkout.
COPY protos/ protos/
COPY libs/ libs/
RUN mkdir -p libs/contracts/src \
 && /opt/venv/bin/python -m grpc_tools.protoc -I protos --python_out=libs/contracts/src \
      --pyi_out=libs/contracts/src --grpc_python_out=libs/contracts/src $(find protos -name '*.proto') \
 && find libs/contracts/src/boxcost -type d -exec touch {}/__init__.py \;
COPY services/${SERVICE}/ services/${SERVICE}/
# The shared libraries and the service; then the build tools go. A service's migrations, if it owns tables.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation libs/contracts libs/service-kit libs/pg-kit \
      services/${SERVICE} \
 && /opt/venv/bin/pip uninstall -y grpcio-tools setuptools wheel \
 && mkdir -p /app/migrations \
 && if [ -d services/${SERVICE}/migrations ]; then cp -r services/${SERVICE}/migrations/. /app/migrations/; fi

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app/migrations/ /app/migrations/
ENV MIGRATIONS_DIR=/app/migrations
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8000 50051 50052 8081
ENTRYPOINT ["boxcost-service"]
