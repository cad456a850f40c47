"""Signed tracking tokens, the HTML rewrite and the machine heuristics, without a server.

Contract: a token verifies only as it was signed (any change to its payload or mac, a cut,
a token of another kind, one signed with a key the keyring no longer lists are
``not_found``); tokens signed before a key rotation verify while the old key stays listed;
the rewrite sends every ``http(s)`` ``<a href>`` through the click path (the link as the
reader's browser would follow it: entities decoded) and nothing else, and adds the pixel
before ``</body>``; machine opens and clicks are flagged as ``domain/tracking/machines.py``
documents.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from getfluxly_server.crypto import Keyring
from getfluxly_server.domain.tracking import InvalidToken, links_for, unsubscribe_headers
from getfluxly_server.domain.tracking.machines import Hit, machine_click, machine_open

OLD_TEXT = Keyring.generate("old")
OLD = Keyring.parse(OLD_TEXT)
PUBLIC = "https://mail.example.com"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_tokens_round_trip_and_refuse_every_change() -> None:
    links = links_for(PUBLIC + "/", OLD)
    url = links.click_url("msg_1", "https://shop.example.com/a?b=1")
    assert url.startswith(f"{PUBLIC}/t/c/")
    token = url.rsplit("/", 1)[1]
    assert links.clicked(token) == ("msg_1", "https://shop.example.com/a?b=1")

    payload, mac = token.split(".")
    forged_payload = _b64(orjson.dumps(["old", "c", "msg_1", "https://evil.example/"]))
    for bad in (
        f"{forged_payload}.{mac}",  # another link, the old mac
        f"{payload}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
        payload,
        f"{payload}.",
        f"{payload}.{mac}.x",
        "",
        "x" * 20_000,
        f"{_b64(b'not json')}.{mac}",
    ):
        with pytest.raises(InvalidToken):
            links.clicked(bad)
    # Signed, but for another use: an open token is not a click (nor an unsubscribe).
    opened = links.open_url("msg_1").rsplit("/", 1)[1]
    assert links.opened(opened) == "msg_1"
    with pytest.raises(InvalidToken):
        links.clicked(opened)
    with pytest.raises(InvalidToken):
        links.unsubscribing(opened)


def test_tokens_outlive_a_key_rotation_while_the_old_key_is_listed() -> None:
    before = links_for(PUBLIC, OLD).unsubscribe_url("msg_1").rsplit("/", 1)[1]
    new_key = Keyring.generate("new")
    listed = links_for(PUBLIC, Keyring.parse(f"{new_key},{OLD_TEXT}"))
    assert listed.unsubscribing(before) == "msg_1"
    after = listed.unsubscribe_url("msg_2").rsplit("/", 1)[1]
    assert orjson.loads(base64.urlsafe_b64decode(after.split(".")[0] + "=="))[0] == "new"
    with pytest.raises(InvalidToken):  # the old key alone does not know the new one
        links_for(PUBLIC, OLD).unsubscribing(after)
    with pytest.raises(InvalidToken):  # dropped from the keyring: its links stop working
        links_for(PUBLIC, Keyring.parse(new_key)).unsubscribing(before)
    with pytest.raises(InvalidToken):  # the same key id with other key material
        links_for(PUBLIC, Keyring.parse(Keyring.generate("old"))).unsubscribing(before)


def test_signing_keys_are_not_the_encryption_keys() -> None:
    derived = OLD.derived_keys("getfluxly tracking links v1")
    assert set(derived) == {"old"}
    assert derived["old"] != base64.b64decode(OLD_TEXT.split(":", 1)[1])
    assert len(derived["old"]) == 32
    assert OLD.derived_keys("another purpose")["old"] != derived["old"]


def test_the_html_rewrite_tracks_web_links_only_and_adds_the_pixel() -> None:
    links = links_for(PUBLIC, OLD)
    html = (
        "<html><head><title>x</title></head><BODY>\n"
        '<!-- <a href="https://commented.example/">no</a> -->\n'
        '<a class=big HREF="https://shop.example.com/?a=1&amp;b=2" data-href="x">Shop</a>\n'
        "<a href='http://plain.example/'>single quotes</a> "
        "<a href=https://bare.example/x>bare</a>\n"
        '<a href="mailto:a@example.com">mail</a> <a href="#top">top</a> '
        '<a href="tel:+100">call</a> <a name="anchor">none</a>\n'
        f'<a href="{PUBLIC}/unsubscribe/abc">unsubscribe</a> '
        '<a href="https://private.example/" data-gf-notrack>private</a>\n'
        "<p>é ünïcode stays</p></BODY></html>"
    )
    out = links.rewrite_html(html, "msg_9")
    tracked = [
        links.clicked(part.split('"', 1)[0]) for part in out.split(f'href="{PUBLIC}/t/c/')[1:]
    ]
    assert tracked == [
        ("msg_9", "https://shop.example.com/?a=1&b=2"),
        ("msg_9", "http://plain.example/"),
        ("msg_9", "https://bare.example/x"),
    ]
    for kept in (
        '<a href="https://commented.example/">', 'data-href="x"', 'class=big',
        'href="mailto:a@example.com"', 'href="#top"', 'href="tel:+100"',
        f'href="{PUBLIC}/unsubscribe/abc"', 'href="https://private.example/" data-gf-notrack',
        "<p>é ünïcode stays</p>",
    ):  # fmt: skip
        assert kept in out, kept
    assert out.count("/t/o/") == 1
    assert out.index("/t/o/") < out.index("</BODY>")
    pixel = out.split(f'src="{PUBLIC}/t/o/')[1].split('"')[0]
    assert links.opened(pixel) == "msg_9"


def test_html_without_a_body_gets_the_pixel_at_the_end() -> None:
    out = links_for(PUBLIC, OLD).rewrite_html("<p>Hi</p>", "msg_1")
    assert out.startswith("<p>Hi</p><img src=")
    assert out.endswith("/>")


def test_marketing_headers_are_rfc_8058_one_click() -> None:
    links = links_for(PUBLIC, OLD)
    headers = unsubscribe_headers(links, "msg_1")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = headers["List-Unsubscribe"]
    assert url.startswith(f"<{PUBLIC}/unsubscribe/")
    assert url.endswith(">")
    assert links.unsubscribing(url[1:-1].rsplit("/", 1)[1]) == "msg_1"


SENT = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"


def _hit(agent: str = BROWSER, *, method: str = "GET", address: str = "192.0.2.7",
         after: float = 3600.0) -> Hit:  # fmt: skip
    return Hit(method, agent, address, SENT + timedelta(seconds=after), SENT)


@pytest.mark.parametrize(
    ("hit", "machine"),
    [
        (_hit(), False),
        (_hit("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"), False),
        (
            _hit(
                "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via "
                "ggpht.com GoogleImageProxy)"
            ),
            False,
        ),
        (_hit("Mozilla/5.0"), True),  # Apple Mail Privacy Protection
        (_hit(address="17.58.1.2"), True),  # Apple's network
        (_hit(""), True),
        (_hit("python-requests/2.32"), True),
        (_hit("Mimecast Security Scanner"), True),
        (_hit(method="HEAD"), True),
        (_hit(after=1.0), True),  # on arrival: a gateway
        (_hit(after=6.0), False),
    ],
)
def test_machine_opens(hit: Hit, machine: bool) -> None:
    assert machine_open(hit, scanner_seconds=5.0) is machine


@pytest.mark.parametrize(
    ("hit", "machine"),
    [
        (_hit(), False),
        (_hit("Mozilla/5.0"), False),  # Apple's proxy fetches images, not links
        (_hit(method="HEAD"), True),
        (_hit("Mozilla/5.0 (compatible; Barracuda Sentinel)"), True),
        (_hit("Slackbot-LinkExpanding 1.0"), True),
        (_hit(after=2.0), True),
    ],
)
def test_machine_clicks(hit: Hit, machine: bool) -> None:
    assert machine_click(hit, scanner_seconds=5.0) is machine


def test_an_unknown_sending_time_is_never_too_soon() -> None:
    hit = Hit("GET", BROWSER, "192.0.2.1", SENT, None)
    assert machine_click(hit, scanner_seconds=5.0) is False
