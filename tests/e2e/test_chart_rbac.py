"""RBAC as the chart's Pods actually run. Each service account holds exactly the grants its
container uses (`kubectl auth can-i --list --as` compared with a fresh account's), the
things it must not do are refused (`kubectl auth can-i --as`, and real requests made from
inside the Pods with their own mounted tokens), and nothing the Pods did while the tour ran
was forbidden (their logs). The tour passing (test_chart_install) is the "can"."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.release import Release

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

BS = "botsessions.botsession.dev"
OPERATOR_GRANTS = {
    BS: {"get", "list", "watch", "patch", "delete"},
    f"{BS}/status": {"get", "patch"},
    "events": {"create"},
    "events.events.k8s.io": {"create"},
    "kopfpeerings.kopf.dev": {"get", "list", "watch", "patch", "create"},
    "customresourcedefinitions.apiextensions.k8s.io": {"get", "list", "watch"},
    "namespaces": {"list", "watch"},
}
API_GRANTS = {BS: {"get", "list", "watch", "create", "delete"}, f"{BS}/status": {"get", "patch"}}

# (verb, resource, extra kubectl arguments): refused to every account of the chart
NOBODY = [
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("get", "secrets", ()),
    ("list", "secrets", ()),
    ("create", "secrets", ()),
    ("update", BS, ()),
    ("update", BS, ("--subresource=status",)),
    ("deletecollection", BS, ()),
    ("create", "pods", ()),
    ("create", "rolebindings.rbac.authorization.k8s.io", ()),
    ("delete", "namespaces", ()),
]
API_NEVER = [
    ("patch", BS, ()),
    ("create", "events", ()),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", ()),
    ("get", "kopfpeerings.kopf.dev", ()),
]
OPERATOR_NEVER = [("delete", "kopfpeerings.kopf.dev", ()), ("get", "configmaps", ())]

# Requests made in a container with its own service-account token; prints their statuses.
AS_THE_POD = """
import json, ssl, sys, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
token = open(sa + "/token").read()
out = []
for method, path, body in json.loads(sys.argv[1]):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request("https://kubernetes.default.svc" + path, data=data,
        method=method, headers={"Authorization": "Bearer " + token,
                                "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            out.append(r.status)
    except urllib.error.HTTPError as e:
        out.append(e.code)
print(json.dumps(out))
"""


def account(release: Release, component: str) -> str:
    return f"system:serviceaccount:{release.namespace}:{release.service_account(component)}"


def grants(release: Release, user: str) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` as `user` in the release's namespace: resource -> verbs."""
    table = release.cluster.kubectl(
        "auth", "can-i", "--list", f"--as={user}", "-n", release.namespace
    ).stdout
    found: dict[str, set[str]] = {}
    for line in table.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[[^\]]*\]\s+\[[^\]]*\]\s+\[([^\]]*)\]\s*$", line)
        if match:
            found.setdefault(match.group(1), set()).update(match.group(2).split())
    return found


def baseline(release: Release) -> str:
    """A fresh account in the namespace: what every account may do (discovery, reviews)."""
    path = f"/api/v1/namespaces/{release.namespace}/serviceaccounts/baseline"
    if release.cluster.api.get_or_none(path) is None:
        release.cluster.kubectl("-n", release.namespace, "create", "serviceaccount", "baseline")
    return f"system:serviceaccount:{release.namespace}:baseline"


def chart_grants(release: Release, component: str) -> dict[str, set[str]]:
    """What the account may do beyond what a fresh account in the namespace may."""
    base = grants(release, baseline(release))
    mine = grants(release, account(release, component))
    extra = {r: verbs - base.get(r, set()) for r, verbs in mine.items()}
    return {r: verbs for r, verbs in extra.items() if verbs}


def can(
    release: Release, component: str, verb: str, resource: str, *extra: str, namespace: str = ""
) -> bool:
    answer = release.cluster.kubectl(
        "auth", "can-i", verb, resource, *extra, f"--as={account(release, component)}",
        "-n", namespace or release.namespace, check=False,
    )  # fmt: skip
    assert answer.stdout.strip() in ("yes", "no"), answer.stderr
    return answer.stdout.strip() == "yes"


def components(release: Release) -> list[str]:
    return ["operator", "api"] if release.api_mode == "deployment" else ["operator"]


def test_the_pods_run_under_the_charts_accounts(release: Release) -> None:
    for pod in release.pods():
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        assert pod["spec"]["serviceAccountName"] == release.service_account(component)
    if release.api_mode == "sidecar":  # no API account: the API runs under the operator's
        assert (
            release.cluster.api.get_or_none(
                f"/api/v1/namespaces/{release.namespace}/serviceaccounts/"
                f"{release.service_account('api')}"
            )
            is None
        )


def test_each_account_holds_exactly_what_its_container_uses(release: Release) -> None:
    operator = dict(OPERATOR_GRANTS)
    if release.api_mode == "sidecar":  # the API creates sessions under this account
        operator[BS] = operator[BS] | {"create"}
    assert chart_grants(release, "operator") == operator
    if release.api_mode == "deployment":
        assert chart_grants(release, "api") == API_GRANTS


def test_what_no_account_may_do(release: Release) -> None:
    refused = {"operator": NOBODY + OPERATOR_NEVER, "api": NOBODY + API_NEVER}
    checks = [
        (component, verb, resource, extra)
        for component in components(release)
        for verb, resource, extra in refused[component]
    ]
    with ThreadPoolExecutor(4) as pool:  # each is a kubectl run
        answers = list(pool.map(lambda check: can(release, *check[:3], *check[3]), checks))
    assert [check for check, yes in zip(checks, answers, strict=True) if yes] == []
    for component in components(release):  # nor anything in another namespace
        assert not can(release, component, "list", BS, namespace="default")
    sidecar = release.api_mode == "sidecar"
    assert can(release, "operator", "create", BS) is sidecar


def requests_as_the_pod(release: Release, component: str, requests: list[object]) -> list[int]:
    pod = release.pods(component)[0]["metadata"]["name"]
    container = "api" if component == "api" else "operator"
    out = release.exec(pod, container, "python3", "-c", AS_THE_POD, json.dumps(requests))
    statuses: list[int] = json.loads(out)
    return statuses


def test_real_requests_with_the_pods_own_tokens(release: Release) -> None:
    ns = release.namespace
    base = f"/apis/botsession.dev/v1alpha1/namespaces/{ns}/botsessions"
    new = {
        "apiVersion": "botsession.dev/v1alpha1",
        "kind": "BotSession",
        "metadata": {"name": "rbac-probe"},
        "spec": {"botId": "rbac", "userId": "probe"},
    }
    dry = "?dryRun=All"  # authorised first, never stored
    crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/botsessions.botsession.dev"
    requests: list[object] = [
        ["GET", base, None],
        ["GET", f"/api/v1/namespaces/{ns}/secrets", None],
        ["DELETE", crd + dry, None],
        ["PUT", f"{base}/rbac-probe{dry}", new],
        ["POST", base + dry, new],
        ["GET", base + "?watch=1&timeoutSeconds=1", None],
    ]
    # list, secrets, delete the CRD, update, create, watch
    created = 201 if release.api_mode == "sidecar" else 403
    assert requests_as_the_pod(release, "operator", requests) == [200, 403, 403, 403, created, 200]
    if release.api_mode == "deployment":
        # the API watches the custom-named BotSessions (its index of aliases)
        assert requests_as_the_pod(release, "api", requests) == [200, 403, 403, 403, 201, 200]


def test_nothing_the_pods_did_was_forbidden(release: Release) -> None:
    for pod in release.pods():
        name = pod["metadata"]["name"]
        for container in pod["spec"]["containers"]:
            log = release.logs(name, container["name"])
            forbidden = [line for line in log.splitlines() if "forbidden" in line.lower()]
            assert forbidden == [], f"{name}/{container['name']}: {forbidden[:3]}"
