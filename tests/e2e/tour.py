"""The README's five-minute tour, step by step, against an installed release: a bot reports
`connecting` (with its phone number) and `connected`, heartbeats; the frontend reads the
status and clears the session; `kubectl get bs` lists it and `kubectl describe bs` shows the
conditions Ready and Synced and one Event per transition. The same steps run through any
`Api` (a port-forward from the host, or the Service's name from a Pod)."""

from __future__ import annotations

from typing import Any

from tests.e2e.clients import Api, Reply
from tests.e2e.release import Release
from tests.e2e.waiting import poll

PHONE = "4915112345678"


def expect(reply: Reply, status: int, what: str) -> dict[str, Any]:
    assert reply.status == status, f"{what}: {reply.status} {reply.text[:500]}"
    body: dict[str, Any] = reply.json()
    return body


def report(api: Api, release: Release, bot: str, user: str, body: dict[str, Any]) -> Reply:
    path = f"/v1/whatsapp/sessions/{bot}/{user}/report"
    return api.call("POST", path, release.tokens.bot_runner, body)


def bot_reports(api: Api, release: Release, bot: str, user: str) -> None:
    first = expect(
        report(api, release, bot, user, {"state": "connecting", "phoneNumber": PHONE,
                                         "displayName": "Jane"}),
        201, f"{api.where}: the first report",
    )  # fmt: skip
    assert first["created"] is True
    assert first["session"]["status"] == "connecting"
    assert first["session"]["phoneNumber"] == PHONE
    second = expect(
        report(api, release, bot, user, {"state": "connected"}), 200, f"{api.where}: connected"
    )
    assert second["session"]["status"] == "active"
    assert [(t["from"], t["to"], t["reason"]) for t in second["transitions"]] == [
        ("connecting", "active", "Connected")
    ]
    beat = expect(
        api.call(
            "POST", f"/v1/whatsapp/sessions/{bot}/{user}/heartbeat", release.tokens.bot_runner
        ),
        200,
        f"{api.where}: heartbeat",
    )
    assert beat["status"] == "active"
    assert beat["revision"] == 2


def frontend_reads(api: Api, release: Release, bot: str, user: str) -> None:
    reply = api.call(
        "GET", f"/v1/whatsapp/session-status/{bot}?userId={user}", release.tokens.frontend
    )
    status = expect(reply, 200, f"{api.where}: session-status")
    assert status["status"] == "active"
    assert status["phoneNumber"] == PHONE
    assert status["displayName"] == "Jane"
    assert reply.headers.get("x-session-source") in ("redis", "database", "kubernetes")


def kubectl_shows(release: Release, bot: str, user: str) -> None:
    """`kubectl get bs` lists it; once synced, `kubectl describe bs` shows the conditions
    and the Events of both transitions."""
    found = release.find_botsession(bot, user)
    assert found is not None, f"no BotSession for {bot}/{user}"
    name = found["metadata"]["name"]
    listing = release.cluster.kubectl("-n", release.namespace, "get", "bs", "-o", "wide").stdout
    row = next((line.split() for line in listing.splitlines() if line.startswith(name)), [])
    assert row[1:4] == ["active", bot, user], listing
    body = release.wait_synced(name, 30)
    conditions = {c["type"]: c["status"] for c in body["status"]["conditions"]}
    assert conditions == {"Ready": "True", "Synced": "True"}

    def described() -> str | None:
        text = release.cluster.kubectl("-n", release.namespace, "describe", "bs", name).stdout
        events = text.split("\nEvents:", 1)[-1]
        return text if "Created" in events and "Connected" in events else None

    text = poll(described, 30, f"the Events of {name}")
    words = " ".join(text.split())
    assert "Type: Ready" in words and "Type: Synced" in words, text
    assert "connecting -> active" in text


def frontend_clears(api: Api, release: Release, bot: str, user: str) -> None:
    cleared = expect(
        api.call("POST", f"/v1/whatsapp/clear-session/{bot}", release.tokens.bot_runner,
                 {"userId": user}),
        200, f"{api.where}: clear-session",
    )  # fmt: skip
    assert cleared["pending"] == []
    assert cleared["cleared"]["session"] == 1
    assert release.find_botsession(bot, user) is None
    gone = api.call(
        "GET", f"/v1/whatsapp/session-status/{bot}?userId={user}", release.tokens.frontend
    )
    assert expect(gone, 404, f"{api.where}: status after the clear")["success"] is False


def run_tour(api: Api, release: Release, bot: str, user: str = "jane") -> None:
    bot_reports(api, release, bot, user)
    frontend_reads(api, release, bot, user)
    kubectl_shows(release, bot, user)
    frontend_clears(api, release, bot, user)
