"""The browser script (``GET /v1/browser/gflux.js``) in headless Chromium against the real server.

A customer's site is played by a tiny HTTP server whose pages are loaded as
``http://shop.test:PORT/...`` (Chromium maps ``shop.test`` to 127.0.0.1), so the page and the
GetFluxly server (``http://127.0.0.1:PORT``) are different sites, as in production: the script
must post cross-origin, and its ``gflux_anon`` cookie is first-party to the shop. Events are
checked where they end up: the server's ``events`` table and the profile API.

Chromium is Debian's (``scripts/setup-browser``), driven by Playwright through
``executable_path`` (``flux_testkit.browser``): no browser download. One browser serves the
module; every test gets its own browser context (fresh cookies and storage) and its own
project. Arrival is polled for with generous deadlines; nothing asserts on timing.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, BrowserContext

from flux_testkit import browser, ingest_spec
from flux_testkit.gfserver import GFProject, GFServer, expect_error, free_port
from flux_testkit.waiting import eventually

SHOP_HOST = "shop.test"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

T = TypeVar("T")

# The module's shared server, on SQLite only: what is tested here is the script and the HTTP
# surface in front of the database, which do not differ between the backends.
pytestmark = pytest.mark.parametrize("gf_module_server", ["sqlite"], indirect=True)


# -- A page of the browser, with what it did recorded.


class Tab:
    """One page in its own browser context (cookies and storage of its own); its uncaught
    errors, console messages and requests are recorded as they happen."""

    def __init__(self, context: BrowserContext, *, owns_context: bool = True) -> None:
        self.context = context
        self.owns_context = owns_context
        self.page = context.new_page()
        self._errors: list[str] = []
        self._console: list[tuple[str, str]] = []
        self._requests: list[dict[str, Any]] = []
        self.page.on("pageerror", lambda error: self._errors.append(str(error)))
        self.page.on("console", lambda message: self._console.append((message.type, message.text)))
        self.page.on(
            "request",
            lambda request: self._requests.append(
                {"url": request.url, "method": request.method, "postData": request.post_data,
                 "type": request.resource_type}
            ),
        )  # fmt: skip

    @contextlib.contextmanager
    def expect_load(self) -> Iterator[None]:
        """Wait, after the block, for the next ``load`` event of the page (a new document)."""
        with self.page.expect_event("load", timeout=30_000):
            yield

    def goto(self, url: str) -> None:
        self.page.goto(url)

    def reload(self) -> None:
        self.page.reload()

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        return self.page.evaluate(expression)

    def page_errors(self) -> list[str]:
        """Uncaught exceptions and unhandled rejections of the page so far."""
        return list(self._errors)

    def console(self, kind: str) -> list[str]:
        """What the page logged with ``console.<kind>`` (e.g. "warning"), as text."""
        return [text for type_, text in self._console if type_ == kind]

    def requests(self) -> list[dict[str, Any]]:
        """The requests the page made (``url``, ``method``, ``postData``, ``type``), as far as
        the browser reports them: not those sent while a document unloads, such as beacons."""
        return list(self._requests)

    def cookies(self) -> dict[str, Any]:
        """The browser context's cookies by name, with their attributes."""
        return {cookie["name"]: cookie for cookie in self.context.cookies()}

    def close(self) -> None:
        """Close the page the way a user closes a tab (its ``pagehide`` handlers run)."""
        self.page.close()

    def dispose(self) -> None:
        """Drop the whole browser context (any page still open in it goes too)."""
        if self.owns_context:
            self.context.close()


# -- The customer's site.


class Site:
    """A tiny web server for the shop's pages (HTML registered with :meth:`add`), reached as
    ``http://shop.test:PORT``: another site than the GetFluxly server's 127.0.0.1."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, bytes]] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10  # a connection Chromium opened ahead and never used ends by itself

            def do_GET(self) -> None:
                found = pages.get(self.path.split("?")[0])
                content_type, body = found or ("text/plain", b"not found")
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://{SHOP_HOST}:{self.port}{path}"

    def add(self, path: str, body: str | bytes, content_type: str = "text/html") -> str:
        """Serve ``body`` at ``path``; returns the page's URL."""
        data = body.encode() if isinstance(body, str) else body
        self.pages[path] = (f"{content_type}; charset=utf-8", data)
        return self.url(path)

    def add_shop_page(
        self,
        path: str,
        key: str,
        *,
        script_src: str,
        title: str = "The Shop",
        attributes: str = "",
        head: str = "",
    ) -> str:
        """A shop page with the GetFluxly tag (``attributes`` are extra ``data-*`` ones) and a
        link ``#next`` to ``/next``; returns its URL."""
        html = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>{head}"
            f'<script src="{script_src}" data-key="{key}" {attributes} async></script>'
            f"</head><body><h1>{title}</h1><a id='next' href='/next'>next</a></body></html>"
        )
        self.pages.setdefault("/next", ("text/html; charset=utf-8", b"<title>Next</title>"))
        return self.add(path, html)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


# -- Fixtures and helpers.


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    shop = Site()
    try:
        yield shop
    finally:
        shop.close()


@pytest.fixture(scope="module")
def chromium(site: Site) -> Iterator[Browser]:
    """One headless Chromium for the module (closed before ``site``, which it depends on, so
    no connection of it keeps the site's threads waiting)."""
    with browser.chromium([f"--host-resolver-rules=MAP {SHOP_HOST} 127.0.0.1"]) as opened:
        yield opened


@pytest.fixture
def tab(chromium: Browser) -> Iterator[Tab]:
    page = Tab(chromium.new_context())
    try:
        yield page
    finally:
        page.dispose()


@pytest.fixture
def project(gf_module_server: GFServer) -> GFProject:
    return gf_module_server.create_project("Browser shop")


def script_url(server: GFServer) -> str:
    return f"{server.url}/v1/browser/gflux.js"


def _json(value: Any) -> Any:
    # SQLite hands JSON columns back as text to a plain SQL query; PostgreSQL as objects.
    return json.loads(value) if isinstance(value, str) else value


def stored_events(server: GFServer, project_id: str) -> list[dict[str, Any]]:
    """Every event stored for the project, oldest first, JSON columns decoded."""
    rows = server.database.query(
        "SELECT message_id, type, name, anonymous_id, external_id, properties, traits, "
        "context, timestamp FROM events WHERE project_id = :project ORDER BY id",
        project=project_id,
    )
    for row in rows:
        for column in ("properties", "traits", "context"):
            row[column] = _json(row[column])
    return rows


def wait_for_events(
    server: GFServer, project_id: str, name: str, count: int = 1
) -> list[dict[str, Any]]:
    """The project's stored events called ``name``, once there are at least ``count``."""

    def named() -> list[dict[str, Any]]:
        found = [e for e in stored_events(server, project_id) if e["name"] == name]
        return found if len(found) >= count else []

    return eventually(named, f"{count} {name} event(s)")


def profiles(server: GFServer, project_id: str, identity: str | None = None) -> list[Any]:
    """The project's live profiles (those with ``identity`` among their ids, if given)."""
    params = {"identity": identity} if identity is not None else {}
    answer = server.client().get(f"/v1/projects/{project_id}/profiles", params=params)
    assert answer.status_code == 200, answer.text
    found: list[Any] = answer.json()["profiles"]
    return found


def anon_cookie(tab: Tab) -> str:
    """The ``gflux_anon`` cookie as the page itself reads it."""
    cookies = tab.evaluate("document.cookie")
    match = re.search(r"(?:^|;\s*)gflux_anon=([^;]+)", cookies)
    assert match, f"no gflux_anon cookie in {cookies!r}"
    return match[1]


# -- Tests: the HTTP surface.


def test_the_script_is_served_cacheable_with_a_script_type(gf_module_server: GFServer) -> None:
    client = gf_module_server.anonymous_client()
    response = client.get("/v1/browser/gflux.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["access-control-allow-origin"] == "*"
    assert "window.gflux" in response.text
    # No import, require or remote fetch of code: the script stands alone.
    assert not re.search(r"\bimport\b\s*[({\"'*]|\brequire\(|importScripts", response.text)

    again = client.get("/v1/browser/gflux.js", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


def test_cors_is_open_on_the_ingest_paths_only(
    gf_module_server: GFServer, project: GFProject
) -> None:
    client = gf_module_server.anonymous_client()
    origin = "http://shop.test"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    for path in ("/v1/events", "/v1/events/batch"):
        answer = client.options(path, headers=preflight)
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "POST" in answer.headers["access-control-allow-methods"]
        allowed = answer.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed
        assert "content-type" in allowed
        assert "access-control-allow-credentials" not in answer.headers

    event = {"event": "cors_checked", "anonymous_id": "a-1"}
    posted = client.post(
        "/v1/events",
        json=event,
        headers={"Origin": origin, "Authorization": f"Bearer {project.publishable_key}"},
    )
    assert posted.status_code == 202, posted.text
    assert posted.headers["access-control-allow-origin"] == "*"
    assert "x-ratelimit-remaining" in posted.headers["access-control-expose-headers"].lower()

    # The management API gives other sites nothing: no preflight, no readable answers.
    for path in ("/v1/projects", f"/v1/projects/{project.id}/profiles", "/v1/identify/alias"):
        answer = client.options(path, headers=preflight)
        assert "access-control-allow-origin" not in answer.headers, path
    listed = gf_module_server.client().get("/v1/projects", headers={"Origin": origin})
    assert listed.status_code == 200
    assert "access-control-allow-origin" not in listed.headers


def test_a_publishable_key_can_only_ingest(gf_module_server: GFServer, project: GFProject) -> None:
    public = gf_module_server.client(project.publishable_key)
    for method, path, body in (
        ("GET", "/v1/projects", None),
        ("GET", f"/v1/projects/{project.id}", None),
        ("GET", f"/v1/projects/{project.id}/profiles", None),
        ("POST", f"/v1/projects/{project.id}/keys", {"kind": "publishable"}),
        ("POST", "/v1/identify/alias", {"user_id": "u", "anonymous_id": "a"}),
    ):
        expect_error(public.request(method, path, json=body), 403, "wrong_key_type")
    # What the beacon sends: the key in the query, a JSON body typed text/plain.
    beacon = gf_module_server.anonymous_client().post(
        f"/v1/events/batch?api_key={project.publishable_key}",
        content=json.dumps({"events": [{"event": "beacon_shaped", "anonymous_id": "a-2"}]}),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert beacon.status_code == 202, beacon.text
    assert beacon.json()["accepted"] == 1


# -- Tests: the script in Chromium.


def test_page_views_track_and_identify_stitch_one_profile(
    gf_module_server: GFServer, project: GFProject, site: Site, tab: Tab
) -> None:
    server = gf_module_server
    # A short send interval keeps the test quick; the timer is still what sends the views.
    fast = 'data-flush-interval="0.2"'
    first = site.add_shop_page(
        "/stitch", project.publishable_key, script_src=script_url(server), attributes=fast
    )
    tab.goto(first)

    [viewed] = wait_for_events(server, project.id, "page_viewed")
    anonymous_id = anon_cookie(tab)
    assert UUID.match(anonymous_id)
    assert tab.evaluate("gflux.anonymousId()") == anonymous_id
    assert viewed["anonymous_id"] == anonymous_id
    assert viewed["external_id"] is None
    assert viewed["type"] == "track"
    assert UUID.match(viewed["message_id"])
    assert viewed["properties"] == {
        "path": "/stitch",
        "url": first,
        "title": "The Shop",
        "referrer": "",
        "search": "",
    }
    context = viewed["context"]
    assert "Chrome" in context["user_agent"]
    assert context["locale"]
    assert context["page"]["url"] == first
    assert context["screen"]["width"] > 0
    assert context["library"]["name"] == "gflux.js"
    # The browser's clock is this machine's: the stored time is the moment it was queued.
    stamp = viewed["timestamp"]
    stamp = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
    stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
    assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)

    cookie = tab.cookies()["gflux_anon"]
    assert cookie["domain"] == SHOP_HOST  # first-party: the shop's, not the server's
    assert cookie["path"] == "/"
    assert cookie["sameSite"] == "Lax"
    assert not cookie["secure"]  # the shop is on plain http here
    assert not cookie["httpOnly"]
    one_year = cookie["expires"] - time.time()
    assert 364 * 86400 < one_year <= 366 * 86400

    tab.evaluate(
        'gflux.track("signed_up", {plan: "pro", seats: 3}); '
        'gflux.identify("user-42", {plan: "pro", email: "ada@example.com"}); '
        "gflux.flush()"
    )
    [signed_up] = wait_for_events(server, project.id, "signed_up")
    assert signed_up["anonymous_id"] == anonymous_id
    assert signed_up["properties"] == {"plan": "pro", "seats": 3}
    [identified] = eventually(
        lambda: [e for e in stored_events(server, project.id) if e["type"] == "identify"],
        "the identify event",
    )
    assert identified["anonymous_id"] == anonymous_id
    assert identified["external_id"] == "user-42"
    assert identified["traits"] == {"plan": "pro", "email": "ada@example.com"}

    # The anonymous visit and the signed-in user are one profile, with the traits.
    def stitched() -> dict[str, Any] | None:
        everyone = profiles(server, project.id)
        by_user = profiles(server, project.id, "user-42")
        by_device = profiles(server, project.id, anonymous_id)
        if len(everyone) == 1 and by_user == by_device == everyone:
            found: dict[str, Any] = everyone[0]
            return found
        return None

    profile = eventually(stitched, "one profile for the device and user-42")
    assert profile["traits"]["plan"] == "pro"
    full = server.client().get(f"/v1/projects/{project.id}/profiles/{profile['id']}").json()
    identities = {(i["kind"], i["value"]) for i in full["profile"]["identities"]}
    assert {("anonymous_id", anonymous_id), ("external_id", "user-42")} <= identities

    # A reload keeps the device id (cookie) and the user (localStorage).
    tab.reload()
    assert anon_cookie(tab) == anonymous_id
    viewed_again = wait_for_events(server, project.id, "page_viewed", 2)[-1]
    assert viewed_again["anonymous_id"] == anonymous_id
    assert viewed_again["external_id"] == "user-42"

    # Following a link: the next page's view names this one as its referrer.
    site.add_shop_page(
        "/next-stitch", project.publishable_key, script_src=script_url(server), attributes=fast
    )
    tab.evaluate("document.getElementById('next').setAttribute('href', '/next-stitch')")
    with tab.expect_load():
        tab.evaluate("document.getElementById('next').click()")
    viewed_next = wait_for_events(server, project.id, "page_viewed", 3)[-1]
    assert viewed_next["properties"]["path"] == "/next-stitch"
    assert viewed_next["properties"]["referrer"] == first
    assert viewed_next["anonymous_id"] == anonymous_id
    assert viewed_next["external_id"] == "user-42"
    assert tab.page_errors() == []
    assert not [w for w in tab.console("warning") if "[gflux]" in w]


def test_another_user_on_the_device_gets_a_new_anonymous_id(
    gf_module_server: GFServer, project: GFProject, site: Site, tab: Tab
) -> None:
    server = gf_module_server
    tab.goto(
        site.add_shop_page(
            "/switch",
            project.publishable_key,
            script_src=script_url(server),
            attributes='data-auto-page="false"',
        )
    )
    first_device = anon_cookie(tab)
    tab.evaluate('gflux.identify("user-a", {name: "A"}); gflux.flush()')
    # Someone else signs in on the same browser without a logout in between: linking them
    # through the old anonymous id would merge two people's profiles.
    tab.evaluate('gflux.identify("user-b", {name: "B"}); gflux.flush()')
    second_device = anon_cookie(tab)
    assert second_device != first_device
    # Logout: the user is forgotten and the device gets a new id again.
    tab.evaluate('gflux.reset(); gflux.track("logged_out"); gflux.flush()')
    third_device = anon_cookie(tab)
    assert third_device not in (first_device, second_device)

    [logged_out] = wait_for_events(server, project.id, "logged_out")
    assert (logged_out["anonymous_id"], logged_out["external_id"]) == (third_device, None)
    identified = {
        e["external_id"]: e["anonymous_id"]
        for e in stored_events(server, project.id)
        if e["type"] == "identify"
    }
    assert identified == {"user-a": first_device, "user-b": second_device}
    eventually(lambda: len(profiles(server, project.id)) == 3, "three separate profiles")
    assert tab.evaluate("localStorage.getItem('gflux_external_id')") is None


def test_queued_events_leave_with_a_beacon_when_the_page_goes(
    gf_module_server: GFServer, project: GFProject, site: Site, tab: Tab
) -> None:
    server = gf_module_server
    # A send interval of ten minutes: only leaving or hiding the page can send these events.
    # The spy records each sendBeacon call in sessionStorage, which the next page of the same
    # origin in this tab can read (the browser does not report requests made during unload).
    spy = """<script>
        const realBeacon = navigator.sendBeacon.bind(navigator);
        navigator.sendBeacon = (url, data) => {
            const sent = realBeacon(url, data);
            const seen = JSON.parse(sessionStorage.getItem("beacons") || "[]");
            seen.push({url: url, sent: sent, body: String(data)});
            sessionStorage.setItem("beacons", JSON.stringify(seen));
            return sent;
        };
    </script>"""
    page = site.add_shop_page(
        "/beacon",
        project.publishable_key,
        script_src=script_url(server),
        attributes='data-auto-page="false" data-flush-interval="600"',
        head=spy,
    )

    # 1. Following a link away.
    tab.goto(page)
    anonymous_id = anon_cookie(tab)
    tab.evaluate('gflux.track("cart_viewed", {items: 2})')
    with tab.expect_load():
        tab.evaluate("document.getElementById('next').click()")
    [cart] = wait_for_events(server, project.id, "cart_viewed")
    assert cart["properties"] == {"items": 2}
    assert cart["anonymous_id"] == anonymous_id
    [beacon] = tab.evaluate('JSON.parse(sessionStorage.getItem("beacons"))')
    assert beacon["sent"] is True
    assert beacon["url"] == f"{server.url}/v1/events/batch?api_key={project.publishable_key}"
    [sent] = json.loads(beacon["body"])["events"]
    assert sent["message_id"] == cart["message_id"]
    assert sent["sent_at"]

    # 2. Hiding it. Playwright keeps every page visible (it emulates focus), so the page is
    # made to report what a browser reports when another tab comes to the front, and is sent
    # the event the browser sends then.
    tab.goto(page)
    tab.evaluate('gflux.track("wishlist_opened")')
    tab.evaluate(
        """Object.defineProperty(document, "visibilityState", {get: () => "hidden"});
        Object.defineProperty(document, "hidden", {get: () => true});
        document.dispatchEvent(new Event("visibilitychange"))"""
    )
    wait_for_events(server, project.id, "wishlist_opened")
    assert tab.evaluate("document.visibilityState") == "hidden"

    # 3. Closing the tab.
    closing = Tab(tab.context, owns_context=False)
    try:
        closing.goto(page)
        anonymous_id = anon_cookie(closing)
        closing.evaluate('gflux.track("checkout_abandoned", {step: "payment"})')
        closing.close()
        [abandoned] = wait_for_events(server, project.id, "checkout_abandoned")
        assert abandoned["anonymous_id"] == anonymous_id
    finally:
        closing.dispose()
    assert tab.page_errors() == []


def test_events_are_sent_at_20_and_in_batches_the_server_accepts(
    gf_module_server: GFServer, project: GFProject, site: Site, tab: Tab
) -> None:
    server = gf_module_server
    page = site.add_shop_page(
        "/batches",
        project.publishable_key,
        script_src=script_url(server),
        attributes='data-auto-page="false" data-flush-interval="600"',
        # Calls made before the script loaded wait in an array and are replayed.
        head='<script>window.gflux = [["track", "early_bird", {"queued": true}]];</script>',
    )
    tab.goto(page)
    # early_bird and 18 views wait in the queue; the 20th event sends them all, with no
    # flush() and no timer.
    tab.evaluate("for (let i = 0; i < 18; i++) gflux.track('item_viewed', {i})")
    tab.evaluate("gflux.track('item_viewed', {i: 18})")
    viewed = wait_for_events(server, project.id, "item_viewed", 19)
    assert sorted(e["properties"]["i"] for e in viewed) == list(range(19))
    [early] = wait_for_events(server, project.id, "early_bird")
    assert early["properties"] == {"queued": True}

    # More than a batch holds, queued at once: split into batches the server takes whole.
    tab.evaluate("for (let i = 0; i < 250; i++) gflux.track('bulk_loaded', {i}); gflux.flush()")
    bulk = wait_for_events(server, project.id, "bulk_loaded", 250)
    assert sorted(e["properties"]["i"] for e in bulk) == list(range(250))
    stored = stored_events(server, project.id)
    assert len({e["message_id"] for e in stored}) == len(stored) == 270
    posts = [
        json.loads(r["postData"])
        for r in tab.requests()
        if r["method"] == "POST" and "/v1/events/batch" in r["url"] and r.get("postData")
    ]
    assert all(event["sent_at"] for body in posts for event in body["events"])
    bulk_batches = [
        len(body["events"]) for body in posts if body["events"][0]["event"] == "bulk_loaded"
    ]
    assert sum(bulk_batches) == 250
    assert len(bulk_batches) >= 3
    assert max(bulk_batches) <= 100
    assert not [w for w in tab.console("warning") if "[gflux]" in w]


def test_the_script_never_throws_into_the_page(
    gf_module_server: GFServer, project: GFProject, site: Site, tab: Tab
) -> None:
    # The script is served by the shop here, and its API host is a port nobody listens on:
    # the GetFluxly server is down.
    script = gf_module_server.anonymous_client().get("/v1/browser/gflux.js")
    site.add("/static/gflux.js", script.content, "text/javascript")
    down = f"http://127.0.0.1:{free_port()}"
    tab.goto(
        site.add_shop_page(
            "/down",
            project.publishable_key,
            script_src=site.url("/static/gflux.js"),
            attributes=f'data-api-host="{down}" data-flush-interval="0.1"',
        )
    )
    outcome = tab.evaluate(
        """(async () => {
            gflux.track("checkout_started", {total: 10});
            gflux.identify("user-7", {plan: "free"});
            gflux.page({section: "cart"});
            await gflux.flush();
            // Mistakes a page may make: each is dropped with a console warning.
            gflux.track("Not Snake Case");
            gflux.track(42);
            const loop = {}; loop.self = loop;
            gflux.track("cyclic_properties", loop);
            const many = {};
            for (let i = 0; i < 40; i++) many["k" + i] = i;
            gflux.track("too_many_properties", many);
            gflux.track("text_properties", "not an object");
            gflux.identify({not: "an id"});
            gflux.identify("user-8", ["not", "traits"]);
            gflux.page("not an object");
            await gflux.flush();
            gflux.reset();
            return typeof gflux.anonymousId();
        })()"""
    )
    assert outcome == "string"
    tab.goto("about:blank")  # the beacon to the dead server on the way out throws nothing
    # A tag without a key: nothing is sent, nothing breaks.
    tab.goto(site.add_shop_page("/no-key", "", script_src=site.url("/static/gflux.js")))
    assert tab.evaluate('gflux.track("ignored"); gflux.flush().then(() => "settled")') == "settled"

    assert tab.page_errors() == []
    warnings = [w for w in tab.console("warning") if "[gflux]" in w]
    assert len(warnings) >= 8, warnings
    assert any("data-key" in w for w in warnings)
    assert stored_events(gf_module_server, project.id) == []


# -- the machine-readable ingest spec (issue 9) --------------------------------------------------

#: Rules the script's API cannot break: it makes the ids, timestamps and message ids itself,
#: sets the type, and has no way to send another field or traits on a track event.
NOT_EXPRESSIBLE = {"ids", "type", "traits", "timestamp", "message_id", "unknown_field"}


def _as_call(event: dict[str, Any]) -> dict[str, Any] | None:
    """The example as a ``gflux.track(name, properties)`` or ``gflux.identify(id, traits)``
    call, or None when the script's API cannot express it."""
    fields = dict(event)
    kind = fields.pop("type", "track")
    if kind == "track" and set(fields) <= {"event", "anonymous_id", "properties"}:
        return {"call": "track", "name": fields.get("event"), "data": fields.get("properties")}
    if kind == "identify" and set(fields) <= {"external_id", "traits"} and "external_id" in fields:
        return {"call": "identify", "name": fields["external_id"], "data": fields.get("traits")}
    return None


def test_the_scripts_limits_are_the_specs(gf_module_server: GFServer) -> None:
    script = gf_module_server.anonymous_client().get("/v1/browser/gflux.js").text
    limits = ingest_spec.limits()

    def constant(name: str) -> str:
        found = re.search(rf"var {name} = ([^;]+);", script)
        assert found is not None, name
        return found[1]

    assert constant("EVENT_NAME") == "/" + ingest_spec.spec()["patterns"]["event_name"] + "/"
    assert int(constant("MAX_NAME")) == limits["max_event_name_length"]
    assert int(constant("MAX_PROPERTIES")) == limits["max_property_keys"]
    assert int(constant("MAX_BATCH_EVENTS")) == limits["max_batch_events"]
    assert int(constant("MAX_DEPTH")) == limits["max_depth"]
    assert eval(constant("MAX_EVENT_BYTES"), {}) == limits["max_event_bytes"]  # noqa: S307


def test_the_script_sorts_the_specs_examples_as_the_server_does(
    gf_module_server: GFServer, project: GFProject, site: Site, tab: Tab
) -> None:
    """Each example the script's API can express, in Chromium: a valid one is sent and
    stored, an invalid one is dropped with a console warning. The rules it cannot break
    are exactly NOT_EXPRESSIBLE."""
    calls, expected = [], []
    for example in ingest_spec.valid():
        call = _as_call(example.event)
        if call is not None:  # the script makes ids, times and message ids itself
            calls.append(call)
            expected.append(True)
    for example in ingest_spec.invalid():
        if example.rule in NOT_EXPRESSIBLE:
            continue
        call = _as_call(example.event)
        assert call is not None, f"{example.name!r} ({example.rule}) must be tried here"
        calls.append(call)
        expected.append(False)
    assert expected.count(True) >= 5
    assert expected.count(False) >= 5

    tab.goto(
        site.add_shop_page(
            "/spec",
            project.publishable_key,
            script_src=script_url(gf_module_server),
            attributes='data-flush-interval="0.2"',
        )
    )
    accepted = tab.evaluate(
        """(async (calls) => {
            const original = console.warn;
            let warned = false;
            console.warn = function () {
                warned = true;
                return original.apply(console, arguments);
            };
            const results = [];
            for (const c of calls) {
                warned = false;
                if (c.call === "track") gflux.track(c.name, c.data);
                else gflux.identify(c.name, c.data);
                results.push(!warned);
            }
            console.warn = original;
            await gflux.flush();
            return results;
        })(CALLS)""".replace("CALLS", json.dumps(calls))
    )
    assert accepted == expected, [
        (c["call"], str(c["name"])[:20], want)
        for c, got, want in zip(calls, accepted, expected, strict=True)
        if got != want
    ]
    # What the script sent, the server stored (each valid track and identify, once).
    sent = [c for c, ok in zip(calls, expected, strict=True) if ok]
    tracks = [c["name"] for c in sent if c["call"] == "track"]
    for name in set(tracks):
        wait_for_events(gf_module_server, project.id, name, tracks.count(name))
    identifies = eventually(
        lambda: (
            [e for e in stored_events(gf_module_server, project.id) if e["type"] == "identify"]
            or None
        ),
        "the identify event",
    )
    assert len(identifies) == sum(c["call"] == "identify" for c in sent)
    assert tab.page_errors() == []
