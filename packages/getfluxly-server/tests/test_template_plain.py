"""Plain templates (text and ``{{ path }}`` outputs only) rendered without Liquid's context:
the same text as Liquid gives, for every kind of value; Liquid itself whenever a variable is
not plainly there, a filter or a tag is used, or the output is past the limit.

Liquid's own rendering is reached through the preview mode of ``render_field`` (a list for
undefined names), which never takes the plain path.
"""

from __future__ import annotations

from typing import Any

import pytest

from getfluxly_server.domain.templates import (
    Limits,
    TemplateFields,
    TemplateRenderFailed,
    compile_template,
    render_message,
)
from getfluxly_server.domain.templates.plain import plan_of, render_plain
from getfluxly_server.domain.templates.sandbox import render_field, sandbox_environment
from getfluxly_server.domain.templates.values import plain_values

VALUES = plain_values(
    {
        "profile": {
            "id": "prf_1", "email": "ada@example.com", "name": "Ada <Lovelace> & co",
            "n": 42, "score": 2.5, "vip": True, "gone": None, "tags": ["a", "<b>"],
            "address": {"city": "Zürich"}, "size": "XL", "list": [{"x": "deep"}],
        },
        "data": {"items": ["first", "second"], "nothing": []},
    }
)  # fmt: skip

PLAIN = [
    "Hello {{ profile.name }}",
    "{{ profile.n }}/{{ profile.score }}/{{ profile.vip }}/{{ profile.gone }}|",
    "{{ profile.tags }} {{ profile.address }} {{ profile.address.city }}",
    "{{ profile.size }} {{ profile.list[0].x }} {{ data.items[1] }} {{ data.nothing }}",
    "Dear {{- profile.name -}} ,\n\n  {{ profile['name'] }}",
    "no variables at all",
    "{% raw %}{{ x }}{% endraw %} {{ profile.n }}",  # (raw is text once parsed)
    "",
]
#: Not found plainly: Liquid decides (undefined, size/first/last, a string indexed ...).
NOT_PLAIN_VALUES = [
    "{{ profile.missing }}",
    "{{ nobody }}",
    "{{ data.items.size }} {{ data.items.first }} {{ data.items.last }}",
    "{{ data.items[5] }} {{ data.items[-1] }}",
    "{{ profile.name[0] }} {{ profile.n.x }}",
]
#: Not plain templates at all.
NOT_PLAIN = [
    "{{ profile.name | upcase }}",
    "{% if profile.vip %}yes{% endif %}",
    "{{ 'literal' }}",
    "{{ profile[data.key] }}",
    "{% comment %}c{% endcomment %}{{ profile.name }}",
]


def _liquid(source: str, autoescape: bool, values: dict[str, Any] = VALUES) -> str:
    template = sandbox_environment(autoescape=autoescape).from_string(source)
    return render_field(template, values, field="text", undefined=[])


@pytest.mark.parametrize("autoescape", [False, True])
@pytest.mark.parametrize("source", PLAIN)
def test_a_plain_template_renders_as_liquid_does(source: str, autoescape: bool) -> None:
    template = sandbox_environment(autoescape=autoescape).from_string(source)
    assert plan_of(template) is not None
    assert render_plain(template, VALUES, 10_000) == _liquid(source, autoescape)
    # And render_field (a real send) gives the same.
    assert render_field(template, VALUES, field="text") == _liquid(source, autoescape)


@pytest.mark.parametrize("source", NOT_PLAIN_VALUES)
def test_a_variable_not_plainly_there_is_left_to_liquid(source: str) -> None:
    template = sandbox_environment(autoescape=False).from_string(source)
    assert plan_of(template) is not None
    assert render_plain(template, VALUES, 10_000) is None
    assert render_field(template, VALUES, field="text") == _liquid(source, False)


@pytest.mark.parametrize("source", NOT_PLAIN)
def test_filters_tags_and_literals_are_left_to_liquid(source: str) -> None:
    template = sandbox_environment(autoescape=False).from_string(source)
    assert plan_of(template) is None
    assert render_plain(template, VALUES, 10_000) is None
    values = {**VALUES, "data": {"key": "name"}}
    assert render_field(template, values, field="text") == _liquid(source, False, values)


def test_html_is_escaped_and_the_subject_and_text_are_not() -> None:
    compiled = compile_template(
        TemplateFields(
            subject="Hi {{ profile.name }}",
            html="<p>{{ profile.name }}</p>",
            text="Hi {{ profile.name }}",
        )
    )
    rendered = render_message(compiled, VALUES)
    assert rendered.subject == "Hi Ada <Lovelace> & co"
    assert rendered.html == "<p>Ada &lt;Lovelace&gt; &amp; co</p>"
    assert rendered.text == "Hi Ada <Lovelace> & co"


def test_output_past_the_limit_is_refused_by_liquid() -> None:
    limits = Limits(max_output_chars=50)
    template = sandbox_environment(limits, autoescape=False).from_string("{{ data.long }}")
    values = plain_values({"data": {"long": "x" * 51}})
    assert render_plain(template, values, limits.max_output_chars) is None
    with pytest.raises(TemplateRenderFailed) as caught:
        render_field(template, values, field="text")
    assert caught.value.reason == "output_limit"
    short = plain_values({"data": {"long": "x" * 50}})
    assert render_field(template, short, field="text") == "x" * 50
