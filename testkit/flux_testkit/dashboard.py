"""Driving GetFluxly's dashboard over plain HTTP: users made with the real CLI
(``getfluxly users create``, password on stdin), and a signed-in client that fills in the
CSRF token every form carries, as a browser would."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from flux_testkit.gfserver import GFServer

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


@dataclass(frozen=True)
class GFUser:
    id: str
    email: str
    password: str
    role: str
    workspace_id: str


def create_user(
    server: GFServer, role: str = "admin", *, workspace_id: str | None = None, email: str = ""
) -> GFUser:
    """A new dashboard user (a random email and password unless given), made in this process
    by the service ``getfluxly users create`` calls (test_users.py runs the CLI itself: a
    process start per user costs seconds on a busy machine)."""
    from getfluxly_server.domain import users
    from getfluxly_server.storage.db import Database

    email = email or f"{role}-{secrets.token_hex(4)}@example.com"
    password = secrets.token_urlsafe(16)
    workspace = workspace_id or server.workspace_id
    db = Database(server.database.sqlalchemy_url)
    try:
        with db.transaction() as session:
            user = users.create_user(session, workspace, email, role, password)
            made = GFUser(user.id, user.email, password, role, workspace)
    finally:
        db.dispose()
    return made


def csrf_token(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = _CSRF.search(html)
    if found is None:
        raise AssertionError(f"no csrf_token field in the page: {html[:300]}")
    return found[1]


class DashboardClient:
    """A browser-like HTTP client of the dashboard (cookies kept, redirects not followed)."""

    def __init__(self, server: GFServer) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=30.0, follow_redirects=False)
        self.csrf = ""

    def sign_in(self, email: str, password: str) -> httpx.Response:
        """Post the sign-in form as a browser would (its CSRF token from the form)."""
        form = self.http.get("/login")
        response = self.http.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": csrf_token(form.text),
                  "next": "/"},
        )  # fmt: skip
        if response.status_code == 303:
            self.csrf = csrf_token(self.http.get("/settings/projects").text)
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:  # fmt: skip
        """Post a form; with ``csrf`` the session's token is added, as the page's form has."""
        fields = dict(data or {})
        if csrf:
            fields.setdefault("csrf_token", self.csrf)
        return self.http.post(path, data=fields, **kwargs)

    def close(self) -> None:
        self.http.close()


def signed_in(server: GFServer, user: GFUser) -> DashboardClient:
    client = DashboardClient(server)
    answer = client.sign_in(user.email, user.password)
    if answer.status_code != 303:
        raise AssertionError(f"sign-in refused: {answer.status_code} {answer.text[:300]}")
    return client
