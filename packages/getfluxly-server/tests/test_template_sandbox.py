"""The Liquid sandbox: what a hostile template tries, and the clear refusal it gets instead.

Each attempt must end in a :class:`TemplateRenderFailed` (``validation_error``, with the field
and a ``reason``) or a :class:`TemplateSyntaxInvalid` at save time, never in another exception,
never in leaked data; and the process rendering them must stay fit to render the next message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from getfluxly_server.domain.errors import DomainError, ValidationFailed
from getfluxly_server.domain.templates import (
    Limits,
    TemplateFields,
    TemplateRenderFailed,
    TemplateSyntaxInvalid,
    compile_template,
    preview,
    render_message,
    sandbox,
    variables,
)
from getfluxly_server.domain.templates.sandbox import (
    render_field,
    sandbox_environment,
)
from getfluxly_server.domain.templates.values import plain_data

VALUES = variables(
    profile_id="prof_1",
    email="ada@example.com",
    traits={"first_name": "Ada"},
    data={"code": "C", "path": "/etc/passwd", "items": ["a", "b"]},
)

#: The partial templates of the "project": some of them hostile.
PARTIALS: dict[str, str] = {
    "footer": "<p>Bye {{ profile.first_name }}</p>",
    "self": "x{% include 'self' %}",
    "ping": "{% render 'pong' %}",
    "pong": "{% render 'ping' %}",
    "broken": "{% if %}",
    "fan": "{% for i in (1..20) %}{% include 'leaf' %}{% endfor %}",
    "leaf": "{{ i }}",
}


def _refusal(text: str, *, limits: Limits | None = None) -> TemplateRenderFailed:
    """Render ``text`` as a template's text field; it must be refused at render time."""
    kwargs: dict[str, Any] = {} if limits is None else {"limits": limits}
    template = compile_template(TemplateFields("s", text=text), **kwargs)
    with pytest.raises(TemplateRenderFailed) as caught:
        render_message(template, VALUES, partials=PARTIALS.get)
    err = caught.value
    assert err.code == "validation_error"
    assert err.extra["field"] == "text"
    assert "Traceback" not in err.detail
    return err


def _render_text(text: str) -> str:
    template = compile_template(TemplateFields("s", text=text))
    return render_message(template, VALUES, partials=PARTIALS.get).text


# -- no file system ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{% include '/etc/passwd' %}",
        "{% render '/etc/passwd' %}",
        "{% include '../../../../etc/passwd' %}",
        "{% include 'file:///etc/passwd' %}",
        "{% include data.path %}",
        "{% render 'footer.liquid' %}",
    ],
)
def test_include_and_render_only_reach_the_projects_templates(source: str) -> None:
    passwd = Path("/etc/passwd")
    err = _refusal(source)
    assert err.reason == "not_found"
    assert "in this project" in err.detail
    if passwd.exists():
        assert passwd.read_text().splitlines()[0] not in err.detail


def test_without_a_loader_nothing_can_be_included() -> None:
    template = compile_template(TemplateFields("s", text="{% include 'footer' %}"))
    with pytest.raises(TemplateRenderFailed) as caught:
        render_message(template, VALUES)
    assert caught.value.reason == "not_found"


def test_include_and_render_of_the_projects_templates_work() -> None:
    assert _render_text("{% include 'footer' %}|{% render 'footer' %}") == (
        "<p>Bye Ada</p>|<p>Bye Ada</p>"
    )
    # render isolates the partial from the includer's own variables; include shares them.
    assert _render_text(
        "{% for i in (7..7) %}{% include 'leaf' %}|{% render 'leaf' %}|"
        "{% render 'leaf', i: i %}{% endfor %}"
    ) == ("7||7")


def test_a_failing_loader_reaches_the_caller_as_it_was() -> None:
    """Storage failing while fetching a partial is not the template's fault: the worker must
    see its own error (and retry), not a template validation error."""

    class StorageDownError(ConnectionError):
        pass

    def loader(name: str) -> str | None:
        raise StorageDownError(f"cannot load {name}")

    template = compile_template(TemplateFields("s", text="{% include 'footer' %}"))
    with pytest.raises(StorageDownError, match="cannot load footer"):
        render_message(template, VALUES, partials=loader)


def test_an_included_template_that_does_not_parse_is_named() -> None:
    err = _refusal("ok {% include 'broken' %}")
    assert err.reason == "syntax"
    assert "'broken'" in err.detail


# -- no Python attributes ----------------------------------------------------------------------


class Secretive:
    """An object with attributes, methods and a revealing ``__str__``."""

    password = "hunter2"

    def __init__(self) -> None:
        self.token = "tok_secret"

    def reveal(self) -> str:
        return "revealed"

    def __str__(self) -> str:
        return "STR hunter2"


@pytest.mark.parametrize(
    "source",
    [
        "{{ profile.__class__ }}",
        "{{ profile.__init__ }}",
        "{{ profile.items }}",
        "{{ profile.keys }}",
        "{{ profile.get }}",
        "{{ profile.first_name.upper }}",
        "{{ profile.first_name.__len__ }}",
        "{{ data.items.append }}",
        "{{ data['__class__'] }}",
        "{{ data.items.__class__.__name__ }}",
        "{% for k in profile.__dict__ %}{{ k }}{% endfor %}",
    ],
)
def test_python_attributes_and_methods_are_not_reachable(source: str) -> None:
    assert _render_text(source) == ""


def test_objects_never_reach_a_template() -> None:
    """An object with attributes and methods is refused, never rendered; even smuggled past
    ``variables`` (straight into the renderer), nothing of it is reachable but its text."""
    with pytest.raises(ValidationFailed, match="JSON-like") as caught:
        variables(data={"obj": Secretive()})
    assert "hunter2" not in caught.value.detail
    template = compile_template(
        TemplateFields(
            "s",
            text="[{{ o.password }}][{{ o.token }}][{{ o.reveal }}][{{ o.__dict__ }}]"
            "[{{ o.__class__ }}][{{ o['password'] }}][{{ o.reveal.__globals__ }}]",
        )
    )
    # render_message copies what it is given to plain data: the object is refused there too.
    with pytest.raises(ValidationFailed, match="JSON-like"):
        render_message(template, {"o": Secretive()})
    # And below that, Liquid itself only ever uses item access: attributes stay out of reach.
    assert template.text is not None
    out = render_field(template.text, {"o": Secretive()}, field="text")
    assert out == "[][][][][][][]"


def test_plain_data_turns_subclasses_into_plain_values() -> None:
    from markupsafe import Markup

    class Traits(dict[str, object]):
        def leak(self) -> str:
            return "leak"

    copied = plain_data({"t": Traits(a=Markup("<b>"), b=(1, 2.5, True, None))})
    assert copied == {"t": {"a": "<b>", "b": [1, 2.5, True, None]}}
    assert type(copied["t"]) is dict
    assert type(copied["t"]["a"]) is str
    deep: list[object] = []
    cursor = deep
    for _ in range(100):
        cursor.append([])
        cursor = cursor[0]  # type: ignore[assignment]
    with pytest.raises(TypeError, match="nested more than 64"):
        plain_data(deep)


# -- bounded loops -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in (1..100000000) %}x{% endfor %}",
        "{% for i in (1..1000) %}{% for j in (1..1000) %}{% endfor %}{% endfor %}",
        "{% for i in (1..60000) %}{% endfor %}{% for i in (1..60000) %}{% endfor %}",
        "{% tablerow i in (1..100000000) %}{{ i }}{% endtablerow %}",
        "{% for i in (1..400) %}{% include 'fan' %}{% endfor %}",
        # render/include "for" a list loops too: 100 x 2,000 partial renders.
        "{% assign l = (1..2000) | sort %}"
        "{% for j in (1..100) %}{% render 'leaf' for l as i %}{% endfor %}",
        "{% assign l = (1..2000) | sort %}"
        "{% for j in (1..100) %}{% include 'leaf' for l %}{% endfor %}",
    ],
)
def test_loops_are_bounded_in_total_per_render(source: str) -> None:
    err = _refusal(source)
    assert err.reason in ("loop_limit", "include_limit")
    if err.reason == "loop_limit":
        assert "100000 iterations" in err.detail


def test_a_normal_loop_is_fine() -> None:
    assert _render_text("{% for i in (1..5) %}{{ i }}{% endfor %}") == "12345"


def test_many_includes_are_bounded_even_when_shallow() -> None:
    err = _refusal("{% for i in (1..30) %}{% include 'fan' %}{% endfor %}")  # 600 includes
    assert err.reason == "include_limit"
    assert "500 include/render" in err.detail


# -- bounded output and memory -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        # Doubling a string: 10 * 2**40 bytes if nothing stopped it.
        ("{% assign s = 'xxxxxxxxxx' %}" + "{% assign s = s | append: s %}" * 40 + "{{ s }}", None),
        # ... straight to the output.
        ("{{ 'xxxxxxxxxxxxxxxx' | append: 'x' }}" * 10 + "{% for i in (1..99999) %}"
         "{{ 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' }}{% endfor %}",
         "output_limit"),
        # A capture is output too.
        ("{% capture c %}{% for i in (1..99999) %}xxxxxxxxxxxxxxxxxxxx{% endfor %}"
         "{% endcapture %}{{ c | size }}", "output_limit"),
        # replace: the result's size is the product of its inputs' sizes.
        ("{% assign s = 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' %}"
         + "{% assign s = s | replace: 'x', s %}" * 4 + "{{ s | size }}", "output_limit"),
        ("{{ (1..50000) | join: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' }}", "output_limit"),
        # A range made into a list (1e8 items) before any loop sees it.
        ("{{ (1..100000000) | sort | first }}", "size_limit"),
        ("{{ (1..100000000) | reverse | first }}", "size_limit"),
        ("{% assign s = 'abcdefghij' %}{% for i in (1..16) %}{% assign s = s | append: s %}"
         "{% endfor %}{% assign a = s | split: '' %}{{ a.size }}", "size_limit"),
        # Squaring a number again and again.
        ("{% assign x = 99999999999 %}{% for i in (1..30) %}{% assign x = x | times: x %}"
         "{% endfor %}{{ x }}", "size_limit"),
    ],
)  # fmt: skip
def test_output_and_memory_are_bounded(source: str, reason: str | None) -> None:
    err = _refusal(source)
    assert err.reason in ((reason,) if reason else ("output_limit", "memory_limit"))


def test_assigned_variables_are_bounded_in_size() -> None:
    limits = Limits(max_variable_bytes=10_000)
    err = _refusal(
        "{% assign a = 'x' %}{% for i in (1..20) %}{% capture b %}{{ a }}{{ a }}{% endcapture %}"
        "{% assign a = b %}{% endfor %}",
        limits=limits,
    )
    assert err.reason == "memory_limit"
    assert "10000 bytes" in err.detail


# -- bounded depth and recursion ---------------------------------------------------------------


@pytest.mark.parametrize("source", ["{% include 'self' %}", "{% render 'ping' %}"])
def test_recursive_includes_stop_at_the_depth_limit(source: str) -> None:
    err = _refusal(source)
    assert err.reason == "depth_limit"
    assert "include itself" in err.detail


@pytest.mark.parametrize(
    "source",
    [
        "{{ x" + "[x" * 5000 + "]" * 5000 + " }}",
        "{% if " + " and ".join(["a"] * 5000) + " %}y{% endif %}",
        "{% if " + " == ".join(["a"] * 5000) + " %}y{% endif %}",
    ],
)
def test_deeply_nested_expressions_are_refused_at_save_time(source: str) -> None:
    with pytest.raises(TemplateSyntaxInvalid, match="nested too deeply") as caught:
        compile_template(TemplateFields("s", text="ok\n" + source))
    assert (caught.value.field, caught.value.line) == ("text", 2)


def test_deeply_nested_blocks_are_refused_at_save_time() -> None:
    with pytest.raises(TemplateSyntaxInvalid, match="nesting") as caught:
        compile_template(TemplateFields("s", text="{% if a %}" * 40 + "{% endif %}" * 40))
    assert caught.value.field == "text"


# -- bounded time ------------------------------------------------------------------------------


def test_render_time_is_bounded_by_a_deadline() -> None:
    # A deadline that has always passed: the first check refuses. (No timing is asserted:
    # this proves the check is wired in, whatever the machine's speed.)
    limits = Limits(max_render_seconds=0)
    template = compile_template(
        TemplateFields(
            "{{ profile.first_name | upcase }}", text="{% for i in (1..9) %}{% endfor %}"
        ),
        limits=limits,
    )
    with pytest.raises(TemplateRenderFailed) as caught:
        render_message(template, VALUES)
    assert (caught.value.field, caught.value.reason) == ("subject", "time_limit")
    assert "longer than 0 s" in caught.value.detail


@pytest.mark.parametrize(
    "source",
    [
        # Nothing here filters or outputs: only the per-iteration check can see the clock.
        "{% for i in (1..1000) %}{% if data.x %}{% endif %}{% endfor %}",
        "{% tablerow i in (1..1000) %}{% if data.x %}{% endif %}{% endtablerow %}",
        "{% assign l = (1..1000) | sort %}{% render 'quiet' for l as i %}",
        "{% assign l = (1..1000) | sort %}{% include 'quiet' for l %}",
    ],
)
def test_the_deadline_is_checked_at_every_loop_iteration(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock that moves one second at each look: a deadline of 100 s passes after about
    # 100 checks, which only a check per iteration (or per partial) reaches.
    ticks = iter(range(10**6))
    monkeypatch.setattr(sandbox, "_clock", lambda: float(next(ticks)))
    template = compile_template(
        TemplateFields("s", text=source), limits=Limits(max_render_seconds=100)
    )
    with pytest.raises(TemplateRenderFailed) as caught:
        render_message(template, VALUES, partials={"quiet": "{% if i %}{% endif %}"}.get)
    assert caught.value.reason == "time_limit"
    assert next(ticks) < 200  # it stopped soon after the deadline, not at the loop's end


# -- other template errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 1 | divided_by: 0 }}", "divide by 0"),
        ("{{ 'a' | slice }}", "start"),
        ("{{ 1 | modulo: 0 }}", ""),
    ],
)
def test_template_mistakes_at_render_time_are_clear_errors(source: str, message: str) -> None:
    err = _refusal(source)
    assert err.reason == "error"
    assert message in err.detail


def test_limit_errors_in_preview_are_domain_errors_too() -> None:
    template = compile_template(
        TemplateFields("s", html="{% for i in (1..100000000) %}{% endfor %}")
    )
    with pytest.raises(TemplateRenderFailed) as caught:
        preview(template, VALUES)
    assert (caught.value.field, caught.value.reason) == ("html", "loop_limit")


# -- the worker survives -----------------------------------------------------------------------

HOSTILE = [
    "{% include '/etc/passwd' %}",
    "{% for i in (1..100000000) %}{% endfor %}",
    "{% for i in (1..1000) %}{% for j in (1..1000) %}x{% endfor %}{% endfor %}",
    "{% assign s = 'xx' %}" + "{% assign s = s | append: s %}" * 30,
    "{{ (1..100000000) | sort }}",
    "{% include 'self' %}",
    "{% render 'ping' %}",
    "{{ 1 | divided_by: 0 }}",
    "{% include 'broken' %}",
    "{% assign x = 9 %}{% for i in (1..40) %}{% assign x = x | times: x %}{% endfor %}",
    # Each replace multiplies the size by 100: 10**2, 10**4, 10**6, 10**8 characters.
    "{{ 'x' | replace: '', Y | replace: 'y', Z | replace: 'z', W | replace: 'w', Y }}".replace(
        "Y", repr("y" * 100)
    )
    .replace("Z", repr("z" * 100))
    .replace("W", repr("w" * 100)),
]


def test_a_worker_survives_many_hostile_templates_in_a_row() -> None:
    """One process renders every hostile template several times over, as a delivery worker
    would message after message; each is refused with a domain error, and afterwards a good
    template renders exactly as it should (no state, budget or limit left behind)."""
    refused: list[DomainError] = []
    for _round in range(3):
        for source in HOSTILE:
            template = compile_template(TemplateFields("Hi {{ profile.first_name }}", html=source))
            try:
                render_message(template, VALUES, partials=PARTIALS.get)
            except DomainError as err:  # what a worker catches and records on the message
                refused.append(err)
    assert len(refused) == 3 * len(HOSTILE)
    assert {err.code for err in refused} == {"validation_error"}
    assert {err.extra["field"] for err in refused} == {"html"}
    assert len({err.extra["reason"] for err in refused}) >= 6

    good = compile_template(
        TemplateFields(
            "Hi {{ profile.first_name }}",
            html="<p>{% for i in (1..3) %}{{ i }}{% endfor %} {{ data.code }}</p>"
            "{% include 'footer' %}",
        )
    )
    message = render_message(good, VALUES, partials=PARTIALS.get)
    assert (message.subject, message.html, message.text) == (
        "Hi Ada",
        "<p>123 C</p><p>Bye Ada</p>",
        "123 C\n\nBye Ada",
    )


def test_environments_are_shared_and_keep_their_limits() -> None:
    small = Limits(max_loop_iterations=10)
    assert sandbox_environment(small, autoescape=True) is sandbox_environment(
        small, autoescape=True
    )
    assert sandbox_environment(small, autoescape=True).limits == small
    err = _refusal("{% for i in (1..11) %}{% endfor %}", limits=small)
    assert "10 iterations" in err.detail
    # The default limits are untouched by a template compiled with smaller ones.
    assert _render_text("{% for i in (1..11) %}{% endfor %}ok") == "ok"
