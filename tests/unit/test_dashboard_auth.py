"""The dashboard asks who is looking when a username and password are configured; probes stay open."""

from __future__ import annotations

import base64

from wattflow.settings import Settings


def _client(username: str = "", password: str = ""):
    from wattflow.dashboard.app import create_app

    settings = Settings()
    settings.dashboard.username, settings.dashboard.password = username, password

    class NoData:
        def versions(self, fresh: bool = False):
            return {}

    return create_app(settings, data=NoData()).server.test_client()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_login_required_when_configured() -> None:
    client = _client("facilities", "s3cret")
    refused = client.get("/")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert client.get("/", headers=_basic("facilities", "wrong")).status_code == 401
    assert client.get("/", headers=_basic("someone", "s3cret")).status_code == 401
    assert client.get("/_dash-layout").status_code == 401  # the app's own API too, not only the page
    assert client.get("/", headers=_basic("facilities", "s3cret")).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/healthz").data == b"ok"


def test_open_on_loopback_when_not_configured() -> None:
    client = _client()
    assert client.get("/").status_code == 200 and client.get("/healthz").status_code == 200
