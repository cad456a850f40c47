"""Templates: variables, undefined values and preview warnings, syntax errors, MJML, escaping,
the text part from HTML, and the compiled-template cache.

The sandbox's refusals (files, Python attributes, endless loops, huge output, recursion) are
in ``test_template_sandbox.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from getfluxly_server.domain.errors import DomainError, ValidationFailed
from getfluxly_server.domain.templates import (
    TemplateCache,
    TemplateFields,
    TemplateSyntaxInvalid,
    compile_template,
    html_to_text,
    prepare,
    preview,
    render_message,
    variables,
)
from getfluxly_server.domain.templates import render as render_module

EVERYTHING = variables(
    profile_id="prof_1",
    email="ada@example.com",
    traits={"first_name": "Ada", "plan": "pro", "id": "trait-id-loses", "tags": ["a", "b"]},
    event_name="order.completed",
    event_properties={"total": 42.5, "items": [{"name": "Lamp"}, {"name": "Desk"}]},
    data={"code": "X1", "nested": {"deep": True}},
    project={"id": "proj_1", "name": "Acme"},
    unsubscribe_url="https://gf.example/u?t=1&s=2",
    preferences_url="https://gf.example/p?t=1",
)


def _syntax_error(fields: TemplateFields) -> TemplateSyntaxInvalid:
    with pytest.raises(TemplateSyntaxInvalid) as caught:
        prepare(fields)
    err = caught.value
    assert err.code == "validation_error"
    return err


# -- variables ---------------------------------------------------------------------------------


def test_every_variable_renders_in_subject_html_and_text() -> None:
    template = compile_template(
        TemplateFields(
            subject="{{ project.name }}: order for {{ profile.first_name }}",
            html=(
                "<p>{{ profile.id }} {{ profile.email }} {{ profile.plan }}"
                " {{ profile.tags | join: '+' }}</p>"
                "<p>{{ event.name }} {{ event.properties.total }}"
                "{% for item in event.properties.items %} {{ item.name }}{% endfor %}</p>"
                "<p>{{ data.code }} {{ data.nested.deep }} {{ project.id }}</p>"
                '<a href="{{ unsubscribe_url }}">unsubscribe</a>'
                ' <a href="{{ preferences_url }}">preferences</a>'
            ),
            text="Hi {{ profile.first_name }}, {{ data.code }}. Unsubscribe: {{ unsubscribe_url }}",
        )
    )
    message = render_message(template, EVERYTHING)
    assert message.subject == "Acme: order for Ada"
    assert message.html == (
        "<p>prof_1 ada@example.com pro a+b</p>"
        "<p>order.completed 42.5 Lamp Desk</p>"
        "<p>X1 true proj_1</p>"
        '<a href="https://gf.example/u?t=1&amp;s=2">unsubscribe</a>'
        ' <a href="https://gf.example/p?t=1">preferences</a>'
    )
    # The text field is not HTML: the same URL is not escaped there.
    assert message.text == "Hi Ada, X1. Unsubscribe: https://gf.example/u?t=1&s=2"


def test_profile_id_and_email_win_over_traits_of_the_same_name() -> None:
    values = variables(profile_id="prof_1", email="a@example.com", traits={"id": "x", "email": "y"})
    template = compile_template(TemplateFields("{{ profile.id }} {{ profile.email }}", text="-"))
    assert render_message(template, values).subject == "prof_1 a@example.com"


def test_undefined_renders_empty_and_default_gives_a_value() -> None:
    template = compile_template(
        TemplateFields(
            subject="Hi {{ profile.nickname }}!",
            text=(
                "[{{ profile.nickname | default: 'friend' }}]"
                "[{{ nothing.at.all }}][{{ data.missing | default: 'x' }}]"
                "{% if profile.vip %}VIP{% else %}regular{% endif %}"
            ),
        )
    )
    message = render_message(template, EVERYTHING)
    assert message.subject == "Hi !"
    assert message.text == "[friend][][x]regular"


def test_a_default_filter_keeps_an_undefined_variable_out_of_the_warnings() -> None:
    template = compile_template(
        TemplateFields(
            subject='Hi {{ profile.nickname | default: "friend" }}',
            text=(
                '{{ data.coupon | upcase | default: "none" }} {{ data.coupon }}'
                " {{ data.plan | default: profile.plan }}"
            ),
        )
    )
    answer = preview(template, variables())
    assert (answer["subject"], answer["text"]) == ("Hi friend", "none  ")
    # The bare ``data.coupon`` and the fallback ``profile.plan`` have no default of their
    # own; ``upcase`` turned the undefined coupon into text before ``default`` saw it.
    assert [w["variable"] for w in answer["warnings"]] == [
        "data.coupon", "profile.plan",
    ]  # fmt: skip


def test_preview_lists_undefined_variables_by_dotted_path_and_field() -> None:
    template = compile_template(
        TemplateFields(
            subject="Hi {{ profile.nickname }}",
            html=(
                "<p>{{ profile.nickname }} {{ data.items[0].name }} {{ coupon }}"
                " {{ profile.first_name }} {{ data.code }}</p>"
            ),
        )
    )
    answer = preview(template, variables(traits={"first_name": "Ada"}, data={"code": "C"}))
    assert answer["subject"] == "Hi"
    assert answer["html"] == "<p>   Ada C</p>"
    assert answer["text"] == "Ada C"
    assert answer["warnings"] == [
        {
            "type": "undefined_variable",
            "variable": "profile.nickname",
            "fields": ["subject", "html"],
        },
        {"type": "undefined_variable", "variable": "data.items[0].name", "fields": ["html"]},
        {"type": "undefined_variable", "variable": "coupon", "fields": ["html"]},
    ]
    # The same template with everything defined warns about nothing; a real render never
    # warns, and renders exactly what the preview showed.
    full = variables(traits={"first_name": "Ada", "nickname": "A"}, data={"code": "C"})
    assert preview(template, full)["warnings"][0]["variable"] == "data.items[0].name"
    real = render_message(template, variables(traits={"first_name": "Ada"}, data={"code": "C"}))
    assert (real.subject, real.html, real.text) == (
        answer["subject"],
        answer["html"],
        answer["text"],
    )


def test_preview_of_a_complete_render_has_no_warnings() -> None:
    template = compile_template(TemplateFields("{{ profile.first_name }}", text="{{ data.code }}"))
    answer = preview(template, variables(traits={"first_name": "Ada"}, data={"code": "C"}))
    assert answer == {"subject": "Ada", "html": None, "text": "C", "warnings": []}


def test_the_subject_is_one_line_whatever_a_trait_holds() -> None:
    template = compile_template(TemplateFields("Hi {{ profile.name }}", text="x"))
    evil = variables(traits={"name": "Ada\r\nBcc: victim@example.com\n\tmore"})
    assert render_message(template, evil).subject == "Hi Ada Bcc: victim@example.com more"


def test_variables_refuse_data_that_is_not_json_like() -> None:
    with pytest.raises(ValidationFailed, match="JSON-like"):
        variables(data={"when": object()})


# -- syntax errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "source", "line", "column", "message"),
    [
        ("subject", "Hi {{ profile.first_name", 1, 4, "expected '}}'"),
        ("html", "<p>\n</p>\n  {% if x %}<b>unclosed</b>", 3, 3, "endif"),
        ("html", "<p>ok</p>\n<p>{{ x | }}</p>", 2, 4, "expected"),
        ("text", "line one\nline two {% endfor %}", 2, 13, "unexpected tag 'endfor'"),
        ("text", "a\nb\n{% nosuchtag %}", 3, 4, "nosuchtag"),
        ("subject", "Hi {{ name | upcase | shout }}", 1, 23, "unknown filter 'shout'"),
        ("html", "<p>\n{% if a == %}x{% endif %}</p>", 2, 1, "expected"),
    ],
)
def test_syntax_errors_name_the_field_line_and_column(
    field: str, source: str, line: int, column: int, message: str
) -> None:
    fields: dict[str, Any] = {"subject": "ok", "text": "ok"}
    fields[field] = source
    err = _syntax_error(TemplateFields(**fields))
    assert (err.field, err.line, err.column) == (field, line, column)
    assert err.extra == {"field": field, "line": line, "column": column}
    assert message in err.detail
    assert err.detail.startswith(f"{field}, line {line}, column {column}: ")


def test_a_template_needs_a_subject_and_a_body() -> None:
    with pytest.raises(ValidationFailed, match="subject is required") as caught:
        prepare(TemplateFields("  ", html="<p>x</p>"))
    assert caught.value.extra == {"field": "subject"}
    with pytest.raises(ValidationFailed, match="at least one of html, text, mjml"):
        prepare(TemplateFields("Hi"))
    with pytest.raises(ValidationFailed, match="not both"):
        prepare(TemplateFields("Hi", html="<p>x</p>", mjml="<mjml></mjml>"))


def test_a_source_over_the_size_limit_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="longer than") as caught:
        prepare(TemplateFields("Hi", html="x" * 300_000))
    assert caught.value.extra == {"field": "html"}


# -- MJML --------------------------------------------------------------------------------------

MJML = """<mjml><mj-head><mj-preview>Preview {{ profile.first_name }}</mj-preview></mj-head>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text>Hello {{ profile.first_name }}!</mj-text>
        <mj-button href="{{ data.url }}">Open</mj-button>
        <mj-raw>{% if data.vip %}</mj-raw>
        <mj-text>Thanks for being VIP</mj-text>
        <mj-raw>{% endif %}</mj-raw>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""


def test_mjml_compiles_at_save_time_and_liquid_inside_survives() -> None:
    prepared = prepare(TemplateFields("Hi", mjml=MJML))
    assert prepared.mjml == MJML
    assert prepared.html is not None
    assert "{{ profile.first_name }}" in prepared.html
    assert "<mj-" not in prepared.html
    assert prepared.html.lower().startswith("<!doctype html>")
    # Preparing what was prepared keeps it (the API may store and later re-check it).
    template = compile_template(prepared)
    assert template.fields == prepared

    vip = render_message(
        template,
        variables(
            traits={"first_name": "Ada"}, data={"url": "https://x.example/?a&b", "vip": True}
        ),
    )
    assert vip.html is not None
    assert "Hello Ada!" in vip.html
    assert 'href="https://x.example/?a&amp;b"' in vip.html
    assert "Thanks for being VIP" in vip.html
    assert "{{" not in vip.html
    assert "{%" not in vip.html
    assert "Hello Ada!" in vip.text
    assert "Preview Ada" in vip.html  # the preheader: in the HTML, hidden from the reader...
    assert "Preview" not in vip.text  # ... and so not in the text part
    assert "Open (https://x.example/?a&b)" in vip.text
    plain = render_message(template, variables(traits={"first_name": "Bo"}, data={"url": "u"}))
    assert plain.html is not None
    assert "Hello Bo!" in plain.html
    assert "VIP" not in plain.html


def test_mjml_errors_are_validation_errors_on_the_mjml_field() -> None:
    err = _syntax_error(TemplateFields("Hi", mjml="<mjml><mj-body><mj-section>"))
    assert err.field == "mjml"
    assert "not valid MJML" in err.detail
    # Liquid mistakes inside MJML are reported at their line in the MJML.
    err = _syntax_error(TemplateFields("Hi", mjml=MJML.replace("{{ data.url }}", "{{ data.url ")))
    assert (err.field, err.line) == ("mjml", 6)


@pytest.mark.parametrize("depth", [150, 5000])
def test_deeply_nested_mjml_is_refused_before_mrml_sees_it(depth: int) -> None:
    """MRML crashes the whole process (a segmentation fault) on MJML nested a few thousand
    deep; this test process surviving is half the assertion."""
    source = (
        "<mjml><mj-body>\n"
        + "<mj-wrapper>" * depth
        + "</mj-wrapper>" * depth
        + "\n</mj-body></mjml>"
    )
    err = _syntax_error(TemplateFields("Hi", mjml=source))
    assert (err.field, err.line) == ("mjml", 2)
    assert "nested more than 100 deep" in err.detail


def test_ordinary_nesting_and_void_elements_do_not_count_against_the_depth() -> None:
    inner = "<p>a<br>b<img src='x.png'><br/></p><!-- <div><div><div> -->" * 200
    source = f"<mjml><mj-body><mj-section><mj-column><mj-text>{inner}</mj-text></mj-column>"
    source += "</mj-section></mj-body></mjml>"
    assert (prepare(TemplateFields("Hi", mjml=source)).html or "").count("<p>a") == 200


def test_a_panic_inside_mrml_is_an_mjml_error_and_an_interrupt_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mjml

    class PanicException(BaseException):  # what pyo3 raises for a Rust panic
        pass

    def panics(source: str, **kwargs: object) -> str:
        raise PanicException("index out of bounds")

    monkeypatch.setattr(mjml, "mjml2html", panics)
    err = _syntax_error(TemplateFields("Hi", mjml="<mjml></mjml>"))
    assert err.field == "mjml"
    assert "index out of bounds" in err.detail

    def interrupted(source: str, **kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(mjml, "mjml2html", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(TemplateFields("Hi", mjml="<mjml></mjml>"))


def test_mj_include_cannot_read_files() -> None:
    source = '<mjml><mj-body><mj-include path="/etc/passwd" /></mj-body></mjml>'
    err = _syntax_error(TemplateFields("Hi", mjml=source))
    assert err.field == "mjml"
    assert "root:" not in err.detail


# -- escaping ----------------------------------------------------------------------------------


def test_html_escapes_values_and_subject_and_text_do_not() -> None:
    template = compile_template(
        TemplateFields(
            subject="{{ profile.name }}",
            html='<p title="{{ profile.name }}">Hi {{ profile.name }}</p>{{ data.note }}',
        )
    )
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    message = render_message(
        template, variables(traits={"name": attack}, data={"note": 'Tom & Jerry\'s "show"'})
    )
    assert message.html is not None
    assert "<script" not in message.html
    assert "<img" not in message.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in message.html
    assert 'title="&lt;script&gt;' in message.html  # no way out of the attribute either
    assert "Tom &amp; Jerry&#39;s &#34;show&#34;" in message.html
    assert message.subject == attack  # a subject is not HTML
    assert attack in message.text  # derived text shows the text the reader saw


@pytest.mark.parametrize(
    "source",
    [
        "{{ profile.x | newline_to_br }}",
        "{{ profile.x | replace: 'a', '<b>' }}",
        "{{ profile.x | append: '<i>' }}",
        "{{ '<i>' | append: profile.x }}",
        "{{ profile.x | prepend: '<u>' }}",
        "{{ profile.x | upcase }}",
        "{{ profile.x | escape_once }}",
        "{{ profile.x | split: 'a' | join: '<br>' }}",
        "{{ profile.list | join: '<br>' }}",
        "{{ profile.list }}",
        "{{ profile.missing | default: profile.x }}",
        "{% capture c %}{{ profile.x }}{% endcapture %}{{ c }}",
        "{% assign c = profile.x %}{{ c }}",
        "{% echo profile.x %}",
        "{% for item in profile.list %}{{ item }}{% endfor %}",
        "{{ profile.x | base64_encode | base64_decode }}",
        "{{ profile.x | url_decode }}",
    ],
)
def test_no_filter_or_tag_lets_a_value_bring_markup_into_html(source: str) -> None:
    template = compile_template(TemplateFields("s", html=source))
    values = variables(
        traits={"x": "<script>alert(1)</script>", "list": ["<script>", "<img src=x>"]}
    )
    html = render_message(template, values).html
    assert html is not None
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "&lt;script" in html.lower()  # shown as text, not dropped


def test_data_cannot_smuggle_markup_past_escaping_but_the_author_can_opt_in() -> None:
    from markupsafe import Markup

    template = compile_template(TemplateFields("s", html="{{ data.a }}|{{ data.a | safe }}"))
    message = render_message(template, variables(data={"a": Markup("<b>bold</b>")}))
    assert message.html == "&lt;b&gt;bold&lt;/b&gt;|<b>bold</b>"


# -- text from HTML ----------------------------------------------------------------------------


def test_text_part_is_derived_from_the_rendered_html_when_none_is_given() -> None:
    template = compile_template(
        TemplateFields(
            subject="s",
            html=(
                "<html><head><title>Ignored</title><style>p { color: red }</style></head><body>"
                "<!--[if mso]><p>outlook only</p><![endif]-->"
                "<h1>Welcome,&nbsp;{{ profile.first_name }}</h1>"
                '<p>Reset <a href="{{ data.url }}">your   password</a> today.'
                "<br>Thanks &amp; bye</p>"
                "<script>var secret = 1;</script>"
                "<table><tr><td>Lamp</td><td>12 &euro;</td></tr>"
                "<tr><td>Desk</td><td>90 &euro;</td></tr></table>"
                "<ul><li>one</li><li>two</li></ul>"
                '<p><a href="https://x.example/logo"><img src="l.png" alt="Acme"></a>'
                ' <a href="https://x.example">https://x.example</a></p>'
                "</body></html>"
            ),
        )
    )
    message = render_message(
        template,
        variables(traits={"first_name": "Ada"}, data={"url": "https://x.example/r?a=1&b=2"}),
    )
    assert message.text == (
        "Welcome, Ada\n"
        "\n"
        "Reset your password (https://x.example/r?a=1&b=2) today.\n"
        "Thanks & bye\n"
        "\n"
        "Lamp 12 €\n"
        "Desk 90 €\n"
        "\n"
        "- one\n"
        "- two\n"
        "\n"
        "Acme (https://x.example/logo) https://x.example"
    )


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("<div>a</div><div>b</div>", "a\nb"),
        ("a<br/>b<br>c", "a\nb\nc"),
        ("<ol><li>x</li><li>y</li></ol>", "1. x\n2. y"),
        ('<a href="#top">Top</a> <a href="javascript:x()">Run</a>', "Top Run"),
        ('<a href="mailto:a@example.com">a@example.com</a>', "a@example.com"),
        ('<a href="https://e.example"></a>', "https://e.example"),
        ('<a href="https://e.example">unclosed', "unclosed (https://e.example)"),
        ("<pre>  keep\n    this</pre>", "  keep\n    this"),
        ("&lt;not a tag&gt; &quot;q&quot; &#8364; &euro;", '<not a tag> "q" € €'),
        ("<style>a{}</style><script>1<2</script>text", "text"),
        ("<p>a</p><hr><p>b</p>", "a\n\n" + "-" * 40 + "\n\nb"),
        (
            '<div style="display:none;max-height:0">Preheader<div>x</div>more</div><p>Body</p>',
            "Body",
        ),
        ('<span hidden>h</span><span style="DISPLAY: none">h</span>shown', "shown"),
        (
            '<p style="display:none">a p is not hidden (its end tag is optional)<p>b',
            "a p is not hidden (its end tag is optional)\n\nb",
        ),
    ],
)
def test_html_to_text_rules(html: str, text: str) -> None:
    assert html_to_text(html) == text


# -- cache -------------------------------------------------------------------------------------


def test_cache_compiles_once_per_version_and_loads_sources_only_on_a_miss() -> None:
    cache = TemplateCache(max_entries=2)
    loads: list[str] = []

    def load(subject: str) -> Any:
        def fields() -> TemplateFields:
            loads.append(subject)
            return TemplateFields(subject, text="x")

        return fields

    first = cache.get(("tpl_1", 1), load("v1"))
    assert cache.get(("tpl_1", 1), load("v1")) is first
    second = cache.get(("tpl_1", 2), load("v2 {{ profile.id }}"))
    assert second is not first
    assert render_message(second, variables(profile_id="p")).subject == "v2 p"
    assert loads == ["v1", "v2 {{ profile.id }}"]
    assert (cache.hits, cache.misses) == (1, 2)
    cache.get(("tpl_2", 1), load("other"))
    assert len(cache) == 2  # bounded: the least recently used version went
    cache.get(("tpl_1", 1), load("v1"))
    assert loads[-1] == "v1"


def test_cache_does_not_keep_a_template_that_fails_to_compile() -> None:
    cache = TemplateCache()
    with pytest.raises(DomainError):
        cache.get("bad", TemplateFields("{% if %}", text="x"))
    assert len(cache) == 0


def test_compiled_templates_are_reused_without_state_leaking_between_renders() -> None:
    template = compile_template(
        TemplateFields(
            "s",
            text=(
                "{% increment n %}{% assign x = x | append: profile.name %}{{ x }}"
                "{% cycle 'a','b' %}"
            ),
        )
    )
    outputs = {render_message(template, variables(traits={"name": str(i)})).text for i in range(3)}
    assert outputs == {"00a", "01a", "02a"}
    assert re.fullmatch(r"0\da", outputs.pop())


# -- the text template derived at compile time -------------------------------------------------

DERIVED_CASES = [
    "<p>Hello {{ profile.first_name }}</p>{% if data.vip %}<p>VIP</p>{% endif %}<p>Bye</p>",
    "<table><tr><th>Item</th><th>Qty</th></tr>{% for line in data.lines %}"
    "<tr><td>{{ line.name }}</td><td>{{ line.qty }}</td></tr>{% endfor %}</table><p>Total</p>",
    '<p><a href="{{ data.url }}">{{ data.url }}</a> <a href="{{ data.url }}">Go</a>'
    ' <a href="{% if data.vip %}https://vip.example{% else %}https://x.example{% endif %}">'
    "Club</a></p>",
    "<ul>{% for line in data.lines %}<li>{{ line.name | upcase }}</li>{% endfor %}</ul>"
    "<div>{{ profile.missing | default: 'n/a' }}</div><pre>  {{ data.code }}\n  x</pre>",
    "<h1>{{ profile.first_name }}</h1>{% comment %}<p>hidden</p>{% endcomment %}"
    "<p>a{% unless data.vip %}<br>not vip{% endunless %}</p><hr>{% raw %}{{ raw }}{% endraw %}",
    MJML,
]


@pytest.mark.parametrize("source", DERIVED_CASES)
@pytest.mark.parametrize("vip", [True, False])
def test_text_derived_at_compile_time_reads_as_the_rendered_html_does(
    source: str, vip: bool
) -> None:
    """The worker renders the text part from a text template made once from the HTML template;
    it must say exactly what html_to_text says of each rendered HTML."""
    fields = (
        TemplateFields("s", mjml=source) if source is MJML else TemplateFields("s", html=source)
    )
    template = compile_template(fields)
    assert template.text_from_html is not None
    values = variables(
        traits={"first_name": "Ada <3 & co"},
        data={
            "vip": vip,
            "url": "https://x.example/?a=1&b=2",
            "code": "C D",  # (runs of spaces in a value inside <pre> would collapse)
            "lines": [{"name": "Lamp & <shade>", "qty": 1}, {"name": "Desk", "qty": 2}],
        },
    )
    message = render_message(template, values)
    assert message.html is not None
    assert message.text == html_to_text(message.html)
    assert message.text  # and it is not trivially empty


PARTIALS = {
    "footer": "<div>Footer <b>{{ profile.first_name }}</b><br>"
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a></div>',
    "row": "<tr><td>{{ line.name }}</td><td>{{ line.qty }}</td></tr>",
    "raw": "<p>{{ data.block | safe }}</p>",
    "split": "<style>{% if data.vip %}</style><div>VIP</div>{% endif %}",
}


@pytest.mark.parametrize(
    "source",
    [
        "<p>Hi</p>{% include 'footer' %}",
        "<p>Hi</p>{% render 'footer', profile: profile, unsubscribe_url: unsubscribe_url %}",
        "<table>{% for line in data.lines %}{% include 'row' %}{% endfor %}</table><p>end</p>",
        "<p>Hi</p>{% include 'raw' %}",  # safe in a partial: from the rendered HTML
        "<p>Hi</p>{% include 'split' %}",  # a partial whose text template does not parse
        "<p>Hi</p>{{ data.block | safe }}",  # safe here: no text template at all
    ],
)
def test_text_with_includes_reads_as_the_rendered_html_does(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []  # rendered HTML parsed for the text: the slow way, when needed

    def counting(html: str) -> str:
        parsed.append(html)
        return html_to_text(html)

    monkeypatch.setattr(render_module, "html_to_text", counting)
    template = compile_template(TemplateFields("s", html=source))
    assert (template.text_from_html is None) == ("| safe" in source)
    values = variables(
        traits={"first_name": "Ada"},
        data={
            "block": "<p>Footer <b>Ada</b></p>",
            "vip": True,
            "lines": [{"name": "Lamp", "qty": 1}, {"name": "Desk", "qty": 2}],
        },
        unsubscribe_url="https://gf.example/u?a=1&b=2",
    )
    message = render_message(template, values, partials=PARTIALS.get)
    assert message.html is not None
    assert message.text == html_to_text(message.html)
    assert "<" not in message.text
    slow = "safe" in source or "'raw'" in source or "'split'" in source
    assert len(parsed) == (1 if slow else 0)


def test_the_public_api_of_the_templates_package() -> None:
    """What the API, the worker and the preview use; a change here is a change for them."""
    import getfluxly_server.domain.templates as templates

    assert set(templates.__all__) == {
        "DEFAULT_LIMITS",
        "CompiledTemplate",
        "Limits",
        "PartialLoader",
        "RenderedMessage",
        "TemplateCache",
        "TemplateFields",
        "TemplateRenderFailed",
        "TemplateSyntaxInvalid",
        "compile_template",
        "html_to_text",
        "mjml_to_html",
        "prepare",
        "preview",
        "render_message",
        "variables",
    }
    assert all(hasattr(templates, name) for name in templates.__all__)
    assert issubclass(templates.TemplateSyntaxInvalid, ValidationFailed)
    assert issubclass(templates.TemplateRenderFailed, ValidationFailed)


def test_one_compiled_template_renders_correctly_from_many_threads_at_once() -> None:
    """Workers share the cache's compiled templates between threads: no render may see
    another's values, counters, loop state or budget."""
    from concurrent.futures import ThreadPoolExecutor

    template = compile_template(
        TemplateFields(
            "Hi {{ profile.first_name }}",
            html="<p>{% increment n %}{% for i in (1..profile.count) %}{{ i }}{% endfor %}"
            "{% assign who = profile.first_name | upcase %} {{ who }}</p>{% include 'footer' %}",
        )
    )
    partials = {"footer": "<div>{{ profile.first_name }}</div>"}

    def render(i: int) -> tuple[int, str, str]:
        message = render_message(
            template,
            variables(traits={"first_name": f"user{i}", "count": i % 7}),
            partials=partials.get,
        )
        return i, message.subject, message.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(render, range(400)))
    for i, subject, text in results:
        digits = "".join(str(k) for k in range(1, i % 7 + 1))
        assert subject == f"Hi user{i}"
        assert text == f"0{digits} USER{i}\n\nuser{i}"
