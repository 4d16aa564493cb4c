"""indicators/config/quality.toml: valid, sourced, and a broken copy is refused with a sentence."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from indicators import quality as q

PACKAGED = resources.files("indicators").joinpath("config/quality.toml").read_text()


def test_packaged_rules_load():
    rules = q.load_rules()
    assert rules.version == "carepulse-quality.2"
    assert tuple(rules.indicators) == q.ALL_INDICATOR_IDS == q.INDICATOR_IDS + q.EXTENSION_INDICATOR_IDS
    assert rules.default_target_ml == {"female": 1600, "male": 2000}
    assert q.packaged_rules() is q.packaged_rules()


def test_windows_and_minimum_denominators():
    rules = q.load_rules()
    assert {i: (r.window_days, r.minimum_denominator) for i, r in rules.indicators.items()} == {
        "falls_rate": (28, 300), "falls_with_harm_rate": (90, 300), "hydration_days_met": (28, 28),
        "hydration_consumed_vs_offered": (7, 1600), "call_bell_response": (28, 10),
        "escalation_timeliness": (28, 5), "observation_compliance": (28, 5), "missed_visits": (28, 5),
        "late_visits": (28, 5), "missed_medication_doses": (28, 5), "carer_continuity": (28, 5),
        "travel_time": (28, 5), "urinalysis_timeliness": (28, 5),
    }
    falls = rules["falls_rate"]
    assert (falls.window_days_for(39), falls.window_days_for(40), falls.window_days_for(None)) == (90, 28, 28)


def test_every_setting_has_a_source_and_proposal_flag():
    def settings(table: dict, where: str):
        for name, entry in table.items():
            if isinstance(entry, dict) and "value" in entry:
                yield f"{where}.{name}", entry
            elif isinstance(entry, dict):
                yield from settings(entry, f"{where}.{name}")

    found = list(settings(tomllib.loads(PACKAGED)["indicators"], "indicators"))
    assert len(found) == 71
    for where, entry in found:
        assert re.search(r"cqc_domain\.md §[0-9]\.[0-9]", entry["source"]), where
        assert isinstance(entry["proposal"], bool), where


def test_issue_11_parameters_are_the_documented_numbers():
    rules = q.load_rules()
    assert {i: (rules[i].direction, rules[i].green.op, rules[i].green.value, rules[i].red.op, rules[i].red.value,
                rules[i].parameters) for i in q.EXTENSION_INDICATOR_IDS} == {
        "carer_continuity": ("lower_is_better", "<=", 10.0, ">", 25.0,
                             {"homecare_more_than_carers": 8, "care_home_more_than_carers": 20,
                              "minimum_contacts_per_person": 14}),
        "travel_time": ("lower_is_better", "<=", 10.0, ">", 25.0, {"long_travel_s": 1200, "break_over_s": 3600}),
        "urinalysis_timeliness": ("higher_is_better", ">=", 90.0, "<", 70.0, {"target_s": 21600}),
    }
    assert all(rules[i].green.proposal and rules[i].red.proposal for i in q.EXTENSION_INDICATOR_IDS)


def test_urinalysis_pathway_is_off_and_carries_the_clinical_caveat():
    pathway = q.load_rules().urinalysis_pathway
    assert (pathway.enabled, pathway.recommend_at_risks) == (False, ("low-medium", "medium"))
    assert "[U3]" in pathway.source and "clinical safety officer" in pathway.source
    config = tomllib.loads(PACKAGED)
    assert "[U3]" in config["indicators"]["urinalysis_timeliness"]["parameters"]["target_s"]["source"]
    assert "[U3]" in (q.urinalysis_timeliness.__doc__ or "")


def broken(old: str, new: str) -> str:
    assert old in PACKAGED
    return PACKAGED.replace(old, new, 1)


FALLS_GREEN = 'green = { op = "<", value = 5.0, proposal = true, source = "cqc_domain.md §2.2 row 1: G < 5 per 1,000 OBD; anchors 7.14 per 1,000 resident-days [F1], 3-14 in hospitals [F3]." }'  # noqa: E501


@pytest.mark.parametrize("text, message", [
    (broken('rules_version = "carepulse-quality.2"', ""), "quality rules: rules_version is missing."),
    (broken(FALLS_GREEN, 'green = { op = "<", value = 5.0, proposal = true }'),
     "quality rules: falls_rate.green has no source; every threshold and setting must cite one."),
    (broken(FALLS_GREEN, 'green = { op = "<", value = 5.0, proposal = true, source = " " }'),
     "quality rules: falls_rate.green has no source; every threshold and setting must cite one."),
    (broken(FALLS_GREEN, 'green = { op = "<", value = 9.0, proposal = true, source = "x" }'),
     "quality rules: falls_rate thresholds are not ordered for lower_is_better: green is < 9 and red is > 8."),
    (broken(FALLS_GREEN, 'green = { op = ">=", value = 5.0, proposal = true, source = "x" }'),
     "quality rules: falls_rate thresholds are not ordered for lower_is_better: green is >= 5 and red is > 8."),
    (broken(FALLS_GREEN, 'green = { op = "=<", value = 5.0, proposal = true, source = "x" }'),
     "quality rules: falls_rate.green.op must be one of <, <=, >, >=."),
    (broken(FALLS_GREEN, 'green = { op = "<", value = true, proposal = true, source = "x" }'),
     "quality rules: falls_rate.green must have a non-negative number as its value."),
    (broken(FALLS_GREEN, 'green = { op = "<", value = 5.0, source = "x" }'),
     "quality rules: falls_rate.green must say proposal = true or false."),
    (broken('green = { op = ">=", value = 80.0, proposal = true, source = "cqc_domain.md §2.2 row 4',
            'green = { op = ">=", value = 50.0, proposal = true, source = "cqc_domain.md §2.2 row 4'),
     "quality rules: hydration_days_met thresholds are not ordered for higher_is_better: "
     "green is >= 50 and red is < 60."),
    (broken('direction = "lower_is_better"', 'direction = "down"'),
     "quality rules: falls_rate.direction must be lower_is_better or higher_is_better."),
    (broken('title = "Falls rate (care home)"', ""), "quality rules: falls_rate.title must be a description."),
    (broken("[indicators.late_visits]", "[indicators.late_visitz]"), "quality rules: unknown indicator late_visitz."),
    (broken("late_s = { value = 1800", "late_after_s = { value = 1800"),
     "quality rules: late_visits.parameters is missing late_s."),
    (broken("female = { value = 1600", "woman = { value = 1600"),
     "quality rules: hydration_days_met.default_target_ml needs female and male."),
    (broken("minimum_denominator = { value = 300, proposal = true, source",
            "minimum_denominator = { value = -1, proposal = true, source"),
     "quality rules: falls_rate.minimum_denominator must have a non-negative number as its value."),
    (broken("beds_below = 40, ", ""),
     "quality rules: falls_rate.small_home_window_days needs beds_below, a whole number."),
    (broken("[urinalysis_pathway]", "[urinalysis_pathwa]"), "quality rules: the urinalysis_pathway section is missing."),
    (broken("enabled = { value = false", "enabled = { value = 0"),
     "quality rules: urinalysis_pathway.enabled must be true or false."),
    (broken("enabled = { value = false, proposal = true, ", "enabled = { value = false, "),
     "quality rules: urinalysis_pathway.enabled must say proposal = true or false."),
    (broken('value = ["low-medium", "medium"]', 'value = ["amber"]'),
     "quality rules: urinalysis_pathway.recommend_at_risks must list escalation risks (low-medium, medium, high)."),
    (broken('value = ["low-medium", "medium"]', "value = []"),
     "quality rules: urinalysis_pathway.recommend_at_risks must list escalation risks (low-medium, medium, high)."),
    (broken("homecare_more_than_carers = { value = 8", "homecare_more_than = { value = 8"),
     "quality rules: carer_continuity.parameters is missing homecare_more_than_carers."),
])
def test_broken_config_is_refused_with_a_sentence(tmp_path: Path, text: str, message: str):
    path = tmp_path / "quality.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        q.load_rules(path)
    assert str(error.value) == message


def test_missing_indicator_is_refused(tmp_path: Path):
    start = PACKAGED.index("[indicators.missed_medication_doses]")
    path = tmp_path / "quality.toml"
    path.write_text(PACKAGED[:start])
    with pytest.raises(ValueError) as error:
        q.load_rules(path)
    assert str(error.value) == "quality rules: indicator missed_medication_doses is missing."
