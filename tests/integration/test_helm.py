"""The Helm chart: lint, render, and install/upgrade/uninstall into a real API server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devstack.controlplane import ControlPlane
from devstack.kubectl import helm, kubectl, kubectl_binary

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "botsession-operator"
KUBE_VERSION = "1.36.3"
TOKENS = [
    "--set",
    "auth.tokens[0].name=frontend",
    "--set",
    "auth.tokens[0].token=0123456789abcdef0123",
    "--set",
    "auth.tokens[0].scopes[0]=read",
]


@pytest.fixture(scope="module")
def fresh_plane() -> Iterator[ControlPlane]:
    """Its own control plane: Helm must create the CRDs, not find them made by kubectl."""
    with ControlPlane() as plane:
        yield plane


def render(*args: str) -> subprocess.CompletedProcess[str]:
    return helm(
        Path("/dev/null"),
        "template",
        "t",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        *args,
        check=False,
    )


def kinds(manifest: str) -> list[str]:
    return sorted(doc["kind"] for doc in yaml.safe_load_all(manifest) if doc)


def test_the_charts_crds_are_the_repos() -> None:
    for name in ("botsessions.yaml", "kopf-peering.yaml"):
        assert (CHART / "files" / name).read_text() == (REPO / "crds" / name).read_text(), (
            f"deploy/helm/botsession-operator/files/{name} drifted from crds/{name}"
        )


def test_lint_is_clean() -> None:
    result = helm(
        Path("/dev/null"),
        "lint",
        str(CHART),
        "--strict",
        "--kube-version",
        KUBE_VERSION,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_default_render_is_the_sidecar_design() -> None:
    result = render()
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert kinds(result.stdout) == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Secret",
            "Secret",
            "Secret",
            "Service",
            "Service",
            "ServiceAccount",
            "StatefulSet",
        ]
    )
    # the API runs under the operator's account in sidecar mode: it must be able to create
    (role,) = [d for d in docs if d["kind"] == "Role"]
    verbs = {
        v for rule in role["rules"] if "botsessions" in rule["resources"] for v in rule["verbs"]
    }
    assert {"create", "delete", "patch", "watch"} <= verbs and "update" not in verbs
    (fingerprint,) = [d for d in docs if d["metadata"]["name"].endswith("-fingerprint")]
    assert fingerprint["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator", "api"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)


def test_bring_your_own_service_accounts() -> None:
    """serviceAccount.create=false: no ServiceAccount rendered, and every binding and Pod names
    the accounts given (before, the bindings named accounts nobody created)."""
    result = render(
        "--set",
        "serviceAccount.create=false",
        "--set",
        "serviceAccount.operatorName=ops-operator",
        "--set",
        "serviceAccount.apiName=ops-api",
        "--set",
        "api.mode=deployment",
        "--set",
        "database.url=postgresql+asyncpg://u:p@db:5432/bs",
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert "ServiceAccount" not in kinds(result.stdout)
    subjects = {s["name"] for d in docs if d["kind"].endswith("RoleBinding") for s in d["subjects"]}
    assert subjects == {"ops-operator", "ops-api"}
    accounts = {
        d["spec"]["template"]["spec"]["serviceAccountName"]
        for d in docs
        if d["kind"] in ("StatefulSet", "Deployment")
    }
    assert accounts == {"ops-operator", "ops-api"}


def test_api_as_its_own_deployment_with_monitoring() -> None:
    result = render(
        "--set",
        "api.mode=deployment",
        "--set",
        "operator.replicas=2",
        "--set",
        "database.url=postgresql+asyncpg://u:p@db:5432/bs",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "database.migrationJob=true",
    )
    assert result.returncode == 0, result.stderr
    found = kinds(result.stdout)
    for kind in ("Deployment", "ServiceMonitor", "PrometheusRule", "Job"):
        assert kind in found
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    api_role = docs[("Role", "t-botsession-api")]
    verbs = {v for rule in api_role["rules"] for v in rule["verbs"]}
    # least privilege for the API: no update, no patch of the object (only of its status)
    assert "update" not in verbs and "watch" in verbs
    assert [r["verbs"] for r in api_role["rules"] if r["resources"] == ["botsessions"]] == [
        ["get", "list", "watch", "create", "delete"]
    ]
    operator_role = docs[("Role", "t-botsession-operator")]
    operator_verbs = {v for rule in operator_role["rules"] for v in rule["verbs"]}
    assert "update" not in operator_verbs
    assert "create" not in {  # the API has its own account in this mode
        v
        for rule in operator_role["rules"]
        if rule["resources"] == ["botsessions"]
        for v in rule["verbs"]
    }
    assert ("ServiceMonitor", "t-botsession-api") not in docs  # no token named for it
    operator = docs[("StatefulSet", "t-botsession")]["spec"]["template"]["spec"]
    assert "--priority=auto" in operator["containers"][0]["args"]
    rules = docs[("PrometheusRule", "t-botsession")]["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "BotSessionSweepFailing",
        "BotSessionSweepStale",
        "BotSessionStuckConnecting",
        "BotSessionWebhookGivingUp",
        "BotSessionWebhookBehind",
        "BotSessionHeartbeatsLost",
        "BotSessionLastSeenBacklog",
        "BotSessionApiErrors",
        "BotSessionApiSlow",
        "BotSessionStoreUnavailable",
        "BotSessionNoLeader",
    }


def test_the_grafana_dashboard_configmap_only_when_asked() -> None:
    """Off by default; on, a ConfigMap with the sidecar's label holding the dashboard JSON
    as the chart ships it (tests/integration/test_grafana.py checks its queries)."""
    assert "grafana" not in render().stdout
    result = render(
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.namespace=monitoring",
        "--set",
        "metrics.grafanaDashboard.annotations.grafana_folder=BotSession",
    )
    assert result.returncode == 0, result.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    dashboard = docs[("ConfigMap", "t-botsession-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "BotSession"}
    shipped = (CHART / "files" / "grafana-dashboard.json").read_text()
    assert json.loads(dashboard["data"]["botsession-operator.json"]) == json.loads(shipped)
    relabelled = render(
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.label=dashboards.example.com/grafana",
        "--set",
        "metrics.grafanaDashboard.labelValue=botsession",
    )
    assert relabelled.returncode == 0, relabelled.stderr
    (configmap,) = [
        d
        for d in yaml.safe_load_all(relabelled.stdout)
        if d and d["metadata"]["name"] == "t-botsession-dashboard"
    ]
    labels = configmap["metadata"]["labels"]
    assert labels["dashboards.example.com/grafana"] == "botsession"
    assert "grafana_dashboard" not in labels
    assert configmap["metadata"]["namespace"] == "default"
    refused = render(
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.lable=x",
    )
    assert refused.returncode != 0 and "lable" in refused.stderr


def test_webhooks_reach_the_operator_from_a_secret_and_never_the_configmap() -> None:
    secret = "whsec_" + "A" * 44
    result = render(
        "--set-json",
        f'webhooks.endpoints=[{{"name":"crm","url":"https://crm.example/h","secret":"{secret}"}}]',
        "--set",
        "settings.webhookRetryWindow=30m",
    )
    assert result.returncode == 0, result.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    stored = json.loads(docs[("Secret", "t-botsession-webhooks")]["stringData"]["webhooks.json"])
    assert stored[0]["secret"] == secret
    settings = docs[("ConfigMap", "t-botsession-settings")]["data"]
    assert settings["BOTSESSION_WEBHOOK_RETRY_WINDOW"] == "30m"
    assert secret not in json.dumps(settings)
    pod = docs[("StatefulSet", "t-botsession")]["spec"]["template"]["spec"]
    operator = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["BOTSESSION_WEBHOOKS_FILE"] == "/etc/botsession/webhooks/webhooks.json"
    assert {"name": "webhooks", "mountPath": "/etc/botsession/webhooks", "readOnly": True} in (
        operator["volumeMounts"]
    )
    assert {"name": "webhooks", "secret": {"secretName": "t-botsession-webhooks"}} in pod["volumes"]
    # without endpoints: no Secret, no volume, no variable
    plain = render()
    assert "webhooks" not in plain.stdout.replace("BOTSESSION_WEBHOOK_", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "operator.replicas=2"], "needs PostgreSQL"),
        (["--set", "api.mode=deployment"], "needs PostgreSQL"),
        (["--set", "operatr.replicas=2"], "additional properties 'operatr' not allowed"),
        (["--set", "settings.sessionTtl=forever"], "sessionTtl"),
        (["--set", "redis.url=http://x"], "redis/url"),
    ],
)
def test_bad_values_are_refused_with_a_reason(args: list[str], message: str) -> None:
    result = render(*args)
    assert result.returncode != 0
    assert message in result.stderr


def get(plane: ControlPlane, *args: str) -> dict[str, object]:
    out = kubectl(plane.kubeconfig, "get", *args, "-o", "json").stdout
    parsed: dict[str, object] = json.loads(out)
    return parsed


def test_install_upgrade_and_uninstall_on_a_real_api_server(fresh_plane: ControlPlane) -> None:
    kubeconfig = fresh_plane.kubeconfig
    kubectl(kubeconfig, "create", "namespace", "bots")
    installed = helm(kubeconfig, "install", "bs", str(CHART), "-n", "bots", *TOKENS, check=False)
    assert installed.returncode == 0, installed.stderr
    assert "kubectl get botsessions -n bots" in installed.stdout  # NOTES.txt
    get(fresh_plane, "crd", "botsessions.botsession.dev")
    get(fresh_plane, "crd", "kopfpeerings.kopf.dev")
    sts = get(fresh_plane, "statefulset", "bs-botsession", "-n", "bots")
    assert sts["spec"]["replicas"] == 1  # type: ignore[index]
    for kind, name in [
        ("service", "bs-botsession-api"),
        ("service", "bs-botsession"),
        ("role", "bs-botsession-operator"),
        ("rolebinding", "bs-botsession-operator"),
        ("serviceaccount", "bs-botsession-operator"),
        ("configmap", "bs-botsession-settings"),
        ("secret", "bs-botsession-tokens"),
        ("secret", "bs-botsession-stores"),
        ("pdb", "bs-botsession"),
    ]:
        get(fresh_plane, kind, name, "-n", "bots")
    # the operator's service account may do what it needs, and no more
    can = [
        "auth",
        "can-i",
        "--as",
        "system:serviceaccount:bots:bs-botsession-operator",
        "-n",
        "bots",
    ]
    assert (
        kubectl(kubeconfig, *can, "patch", "botsessions.botsession.dev/status").stdout.strip()
        == "yes"
    )
    assert kubectl(kubeconfig, *can, "create", "events").stdout.strip() == "yes"
    assert kubectl(kubeconfig, *can, "delete", "secrets", check=False).stdout.strip() == "no"
    # a user's session
    subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
        input="apiVersion: botsession.dev/v1alpha1\nkind: BotSession\n"
        "metadata: {name: keep-me, namespace: bots}\nspec: {botId: b, userId: u}\n",
        text=True,
        check=True,
        capture_output=True,
    )
    upgraded = helm(
        kubeconfig,
        "upgrade",
        "bs",
        str(CHART),
        "-n",
        "bots",
        *TOKENS,
        "--set",
        "settings.sessionTtl=12h",
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    settings = get(fresh_plane, "configmap", "bs-botsession-settings", "-n", "bots")
    assert settings["data"]["BOTSESSION_SESSION_TTL"] == "12h"  # type: ignore[index]
    uninstalled = helm(kubeconfig, "uninstall", "bs", "-n", "bots", check=False)
    assert uninstalled.returncode == 0, uninstalled.stderr
    get(fresh_plane, "crd", "botsessions.botsession.dev")  # kept
    get(fresh_plane, "botsession", "keep-me", "-n", "bots")  # and so are users' sessions


def test_two_shards_install_side_by_side_on_a_real_api_server() -> None:
    """docs/scaling.md: a shard is a release in its own namespace; the second one leaves the
    CRDs to the first (installing them again is refused: they belong to the first release),
    and each has its own Redis key prefix. A control plane of its own: the CRDs another
    test's release kept still name that release as their owner."""
    with ControlPlane() as plane:
        install_two_shards(plane)


def install_two_shards(plane: ControlPlane) -> None:
    kubeconfig = plane.kubeconfig
    for shard in ("shard-a", "shard-b"):
        kubectl(kubeconfig, "create", "namespace", shard)
        crds = ["--set", "crds.install=false"] if shard == "shard-b" else []
        installed = helm(
            kubeconfig,
            "install",
            shard,
            str(CHART),
            "-n",
            shard,
            *TOKENS,
            *crds,
            "--set",
            f"redis.keyPrefix=botsession:{shard}:",
            check=False,
        )
        assert installed.returncode == 0, installed.stderr
    for shard in ("shard-a", "shard-b"):
        settings = get(plane, "configmap", f"{shard}-botsession-settings", "-n", shard)
        data = settings["data"]
        assert data["BOTSESSION_REDIS_KEY_PREFIX"] == f"botsession:{shard}:"  # type: ignore[index]
        get(plane, "clusterrolebinding", f"{shard}-botsession-{shard}-crd-reader")
    crd = get(plane, "crd", "botsessions.botsession.dev")
    owner = crd["metadata"]["annotations"]["meta.helm.sh/release-name"]  # type: ignore[index]
    assert owner == "shard-a"
    uninstalled = helm(kubeconfig, "uninstall", "shard-b", "-n", "shard-b", check=False)
    assert uninstalled.returncode == 0, uninstalled.stderr
    get(plane, "crd", "botsessions.botsession.dev")  # shard-a's still


def test_the_api_is_scraped_with_a_read_token_from_a_secret() -> None:
    result = render(
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.serviceMonitor.apiTokenSecret.name=scrape-token",
    )
    assert result.returncode == 0, result.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}
    monitor = docs[("ServiceMonitor", "t-botsession-api")]["spec"]
    assert monitor["selector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    [endpoint] = monitor["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "scrape-token", "key": "token"},
    }
    api_service = docs[("Service", "t-botsession-api")]
    assert api_service["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    assert "http" in {port["name"] for port in api_service["spec"]["ports"]}
