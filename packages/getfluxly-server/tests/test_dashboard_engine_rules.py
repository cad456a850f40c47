"""The segment rule builder's form and the rule grammar (``web.segment_rules``): what each
kind of row writes, groups of all/any, a saved rule back in the form (and the rules it
cannot show), a fault's JSON path mapped to its row; every built rule is one the domain's
parser accepts. Pure functions: no server."""

from __future__ import annotations

from typing import Any

import pytest

from getfluxly_server.domain.errors import ValidationFailed
from getfluxly_server.domain.segments.rules import parse
from getfluxly_server.web import segment_rules


def built(form: dict[str, str]) -> Any:
    rule = segment_rules.to_rule(segment_rules.from_form(form))
    parse(rule)  # the grammar's own check: every rule the form writes is valid
    return rule


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"kind": "trait", "name": "plan", "op": "eq", "value": "pro"},
         {"trait": "plan", "op": "eq", "value": "pro"}),
        ({"kind": "trait", "name": "age", "op": "gte", "value": "21"},
         {"trait": "age", "op": "gte", "value": 21}),
        ({"kind": "trait", "name": "code", "op": "eq", "value": '"21"'},
         {"trait": "code", "op": "eq", "value": "21"}),
        ({"kind": "trait", "name": "vip", "op": "eq", "value": "true"},
         {"trait": "vip", "op": "eq", "value": True}),
        ({"kind": "trait", "name": "plan", "op": "in", "value": "pro, team, 3"},
         {"trait": "plan", "op": "in", "value": ["pro", "team", 3]}),
        ({"kind": "trait", "name": "plan", "op": "in", "value": '["a,b", "c"]'},
         {"trait": "plan", "op": "in", "value": ["a,b", "c"]}),
        ({"kind": "trait", "name": "email", "op": "exists", "value": "ignored"},
         {"trait": "email", "op": "exists"}),
        ({"kind": "trait", "name": "seen_at", "op": "within_last", "value": " P7D "},
         {"trait": "seen_at", "op": "within_last", "value": "P7D"}),
        ({"kind": "event", "name": "login", "count_op": "gte", "count": "1"},
         {"event": "login"}),
        ({"kind": "event", "name": "login", "count_op": "gte", "count": "3", "within": "P7D"},
         {"event": "login", "count": {"gte": 3}, "within": "P7D"}),
        ({"kind": "event", "name": "login", "count_op": "eq", "count": "0"},
         {"event": "login", "count": {"eq": 0}}),
        ({"kind": "email", "activity": "opened", "within": "P30D"},
         {"email": "opened", "within": "P30D"}),
        ({"kind": "subscribed", "subscribed": "false", "name": "newsletter"},
         {"subscribed": False, "group": "newsletter"}),
        ({"kind": "subscribed", "subscribed": "true"}, {"subscribed": True}),
    ],
)  # fmt: skip
def test_each_kind_of_row_writes_its_condition_and_reads_back(
    row: dict[str, str], expected: dict[str, Any]
) -> None:
    form = {f"g0c0_{key}": value for key, value in row.items()}
    assert built(form) == expected
    again = segment_rules.from_rule(expected)
    assert again.fits
    shown = {f"g0c0_{key}": str(value) for key, value in vars(again.groups[0].rows[0]).items()}
    assert built(shown) == expected


def test_groups_combine_with_all_or_any_and_unused_rows_are_left_out() -> None:
    form = {
        "match": "any",
        "g0_match": "all", "g0c0_kind": "trait", "g0c0_name": "plan", "g0c0_value": "pro",
        "g0c1_kind": "", "g0c1_name": "left blank",
        "g0c2_kind": "event", "g0c2_name": "login", "g0c2_count": "2", "g0c2_count_op": "gte",
        "g3_match": "any", "g3c0_kind": "email", "g3c0_activity": "clicked",
        "g3c5_kind": "subscribed", "g3c5_subscribed": "true",
        "g7_match": "all", "g7c0_kind": "",
    }  # fmt: skip
    builder = segment_rules.from_form(form)
    assert built(form) == {
        "any": [
            {"all": [{"trait": "plan", "op": "eq", "value": "pro"},
                     {"event": "login", "count": {"gte": 2}}]},
            {"any": [{"email": "clicked"}, {"subscribed": True}]},
        ]
    }  # fmt: skip
    segment_rules.to_rule(builder)
    paths = [[r.path for r in g.rows] for g in builder.groups]
    assert paths == [["rule.any[0].all[0]", "rule.any[0].all[1]"],
                     ["rule.any[1].any[0]", "rule.any[1].any[1]"]]  # fmt: skip
    # A fault's path names the row it concerns (the deepest that holds it).
    second = builder.groups[0].rows[1]
    assert segment_rules.row_for(builder, "rule.any[0].all[1].count.gte") is second
    assert segment_rules.row_for(builder, "rule.any[0].all[1]") is second
    assert segment_rules.row_for(builder, "rule.any[0].all[10]") is None
    assert segment_rules.row_for(builder, "rule") is None
    # Read back, the form writes the same rule.
    again = segment_rules.from_rule(built(form))
    assert again.match == "any"
    assert [g.match for g in again.groups] == ["all", "any"]
    shown = {"match": again.match}
    for gi, group in enumerate(again.groups):
        shown[f"g{gi}_match"] = group.match
        for ci, row in enumerate(group.rows):
            shown |= {f"g{gi}c{ci}_{k}": str(v) for k, v in vars(row).items()}
    assert built(shown) == built(form)


def test_a_single_row_is_the_whole_rule_and_an_empty_form_is_refused() -> None:
    builder = segment_rules.from_form({"g0c0_kind": "trait", "g0c0_name": "plan",
                                       "g0c0_op": "exists"})  # fmt: skip
    assert segment_rules.to_rule(builder) == {"trait": "plan", "op": "exists"}
    assert builder.groups[0].rows[0].path == "rule"
    assert segment_rules.row_for(builder, "rule.trait") is builder.groups[0].rows[0]
    with pytest.raises(ValidationFailed) as refused:
        segment_rules.to_rule(segment_rules.from_form({"g0c0_kind": "", "match": "all"}))
    assert refused.value.extra["field"] == "rule"
    # A hand-made form's unknown choices fall back to defaults; too many rows are ignored.
    odd = segment_rules.from_form({"g0c0_kind": "trait", "g0c0_name": "x", "g0c0_op": "drop",
                                   "g0c0_value": "1", "g99c0_kind": "trait"})  # fmt: skip
    assert segment_rules.to_rule(odd) == {"trait": "x", "op": "eq", "value": 1}


@pytest.mark.parametrize(
    "rule",
    [
        {"not": {"trait": "plan", "op": "exists"}},
        {"event": "login", "where": [{"property": "ip", "op": "exists"}]},
        {"email": "sent", "automation_id": "aut_x"},
        {"all": [{"any": [{"all": [{"trait": "a", "op": "exists"}]}]}]},
        {"all": []},
        ["not", "an object"],
    ],
)
def test_rules_the_form_cannot_show_are_left_to_the_json(rule: Any) -> None:
    shown = segment_rules.from_rule(rule)
    assert not shown.fits
    assert shown.groups == []
    assert len(shown.with_blanks().groups) == 1  # a blank group to start again from
