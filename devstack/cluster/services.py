"""Redis and PostgreSQL as Pods behind Services named `redis` and `postgresql`, the names
the chart's values use, from the images devstack.image builds out of Debian packages.
Throw-away: no persistence (an emptyDir for PostgreSQL's data)."""

from __future__ import annotations

from typing import Any

REDIS_PORT = 6379
POSTGRES_PORT = 5432


def _deployment(namespace: str, name: str, container: dict[str, Any]) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True},
                    "containers": [{"name": name, "imagePullPolicy": "Never", **container}],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def _service(namespace: str, name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"app.kubernetes.io/name": name},
            "ports": [{"name": name, "port": port, "targetPort": port}],
        },
    }


def redis(namespace: str, image: str) -> list[dict[str, Any]]:
    container = {
        "image": image,
        "ports": [{"containerPort": REDIS_PORT}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 2},
        "volumeMounts": [{"name": "data", "mountPath": "/tmp"}],  # noqa: S108 - in the Pod
        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
    }
    return [
        _deployment(namespace, "redis", container),
        _service(namespace, "redis", REDIS_PORT),
    ]


def postgres_url(namespace: str, password: str, user: str = "botsession") -> str:
    """The URL the chart's database.url takes (asyncpg, through the Service's name)."""
    return f"postgresql+asyncpg://{user}:{password}@postgresql.{namespace}:{POSTGRES_PORT}/{user}"


def postgres(
    namespace: str, image: str, password: str, user: str = "botsession"
) -> list[dict[str, Any]]:
    secret = "postgresql-credentials"  # noqa: S105 - a name; the password is generated
    container = {
        "image": image,
        "ports": [{"containerPort": POSTGRES_PORT}],
        "env": [
            {"name": "POSTGRES_USER", "value": user},
            {"name": "POSTGRES_DB", "value": user},
            {
                "name": "POSTGRES_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}},
            },
        ],
        "readinessProbe": {
            "exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U", user]},
            "periodSeconds": 2,
        },
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "namespace": namespace},
            "stringData": {"password": password, "url": postgres_url(namespace, password, user)},
        },
        _deployment(namespace, "postgresql", container),
        _service(namespace, "postgresql", POSTGRES_PORT),
    ]
