"""The NEWS2 escalation lifecycle (indicators/escalation.py) as tables of (input, expected).

Deadlines are cqc_domain.md §2.2 row 7 (high 30 min, medium and low-medium 60 min); episodes end on a
clinical review or after 72 h of low scores (row 8). Every expected value is written out here, not read
back from the config, so a wrong number in escalation.toml fails these tests.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indicators.escalation import (
    Episode,
    EscalationRules,
    ScoreFacts,
    Transition,
    band_settled,
    escalation_overdue,
    judgement_clock,
    load_rules,
    on_acknowledgement,
    on_clinical_review,
    on_score,
)
from indicators.news2 import Risk
from tests.factories import T0

RULES = load_rules()
S = timedelta(seconds=1)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)


def facts(risk: Risk, at: datetime, *, total: int | None = None, single_3: bool = False, complete: bool = True,
          event_id: str = "score-1") -> ScoreFacts:
    return ScoreFacts(risk=risk, total=total, any_single_3=single_3, occurred_at=at, score_event_id=event_id,
                      complete=complete)


def episode(risk: Risk = Risk.MEDIUM, at: datetime = T0, **overrides) -> Episode:
    deadline = {Risk.HIGH: 30 * MIN, Risk.MEDIUM: H, Risk.LOW_MEDIUM: H}[risk]
    fields = dict(episode_id="ep-1", risk=risk, raised_at=at, deadline_at=at + deadline, total=5,
                  any_single_3=False, score_event_id="score-0")
    return Episode(**{**fields, **overrides})


# ---------------------------------------------------------------------------------------------------
# load_rules

TOML_TEMPLATE = """
rules_version = "test.1"
[deadline_s]
high = {{ value = {high}, source = "test" }}
medium = {{ value = 4, source = "test" }}
{low_medium}
[resolution]
low_for_s = {{ value = 90, source = "test" }}
[assembly]
window_s = {{ value = 30, source = "test" }}
[lateness]
allowed_s = {{ value = 1, source = "{lateness_source}" }}
idle_after_s = {{ value = 5, source = "test" }}
"""


def write_rules(tmp_path: Path, *, high: str = "2", low_medium: str = 'low-medium = { value = 3, source = "test" }',
                lateness_source: str = "test") -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(TOML_TEMPLATE.format(high=high, low_medium=low_medium, lateness_source=lateness_source))
    return path


def test_packaged_rules_are_the_documented_numbers():
    assert load_rules() == EscalationRules(
        version="carepulse-escalation.1",
        deadline_s={Risk.HIGH: 1800, Risk.MEDIUM: 3600, Risk.LOW_MEDIUM: 3600},
        resolve_after_low_s=259_200,
        assembly_window_s=600,
        allowed_lateness_s=120,
        idle_after_s=5,
    )


def test_an_alternative_file_with_seconds_long_deadlines_loads(tmp_path):
    assert load_rules(write_rules(tmp_path)) == EscalationRules(
        version="test.1",
        deadline_s={Risk.HIGH: 2, Risk.MEDIUM: 4, Risk.LOW_MEDIUM: 3},
        resolve_after_low_s=90,
        assembly_window_s=30,
        allowed_lateness_s=1,
        idle_after_s=5,
    )


def test_the_end_to_end_fast_rules_load():
    rules = load_rules(Path(__file__).parents[1] / "e2e" / "fast_escalation.toml")
    assert rules.deadline_s == {Risk.HIGH: 4, Risk.MEDIUM: 4, Risk.LOW_MEDIUM: 4}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(lateness_source=""), "escalation rules: lateness.allowed_s has no source"),
        (dict(high="-1"), "escalation rules: deadline_s.high must be a non-negative whole number of seconds"),
        (dict(high="1.5"), "escalation rules: deadline_s.high must be a non-negative whole number of seconds"),
        (dict(high='"30"'), "escalation rules: deadline_s.high must be a non-negative whole number of seconds"),
        (dict(high="true"), "escalation rules: deadline_s.high must be a non-negative whole number of seconds"),
        (dict(low_medium=""),
         "escalation rules: deadlines needed for exactly high, low-medium, medium; got high, medium"),
        (dict(low_medium='amber = { value = 3, source = "test" }'),
         "escalation rules: deadlines needed for exactly high, low-medium, medium; got amber, high, medium"),
    ],
    ids=["missing-source", "negative", "fractional", "string", "bool", "missing-band", "unknown-band"],
)
def test_invalid_rules_are_refused_with_a_sentence(tmp_path, overrides, message):
    with pytest.raises(ValueError) as raised:
        load_rules(write_rules(tmp_path, **overrides))
    assert str(raised.value) == message


@pytest.mark.parametrize(("text", "message"), [
    ('rules_version = "x"\n[deadline_s]\n', "escalation rules: section [resolution] is missing"),
    (TOML_TEMPLATE.replace('window_s = {{ value = 30, source = "test" }}', ""),
     "escalation rules: assembly.window_s is missing"),
    (TOML_TEMPLATE.replace('window_s = {{ value = 30, source = "test" }}', "window_s = 30"),
     "escalation rules: assembly.window_s has no source"),
], ids=["missing-section", "missing-entry", "bare-number"])
def test_an_incomplete_file_is_refused_with_a_sentence(tmp_path, text, message):
    path = tmp_path / "rules.toml"
    path.write_text(text.format(high=2, low_medium='low-medium = { value = 3, source = "test" }', lateness_source="t"))
    with pytest.raises(ValueError) as raised:
        load_rules(path)
    assert str(raised.value) == message


# ---------------------------------------------------------------------------------------------------
# on_score: one table of (open episode, score) -> (episode afterwards, transitions)

RAISED_HIGH = episode(Risk.HIGH, T0, episode_id="new", total=9, score_event_id="score-1")
ACKED_AMBER = episode(Risk.MEDIUM, T0, acknowledged_at=T0 + 5 * MIN, acknowledged_by="nurse-1",
                      overdue_reported=True, low_since=None)
UPGRADED = replace(ACKED_AMBER, risk=Risk.HIGH, raised_at=T0 + 20 * MIN, deadline_at=T0 + 50 * MIN, total=8,
                   score_event_id="score-1", acknowledged_at=None, acknowledged_by=None, overdue_reported=False,
                   earlier_bands=(ACKED_AMBER,))  # amber kept as it stood, with its acknowledgement
OPEN_RED = episode(Risk.HIGH, T0, total=8)
LOW_SINCE_1H = replace(OPEN_RED, low_since=T0 + H)

ON_SCORE = [
    # (name, open episode, score, expected episode, expected transitions)
    ("none+low", None, facts(Risk.LOW, T0, total=2), None, []),
    ("none+incomplete-low", None, facts(Risk.LOW, T0, complete=False), None, []),
    ("none+low-medium", None, facts(Risk.LOW_MEDIUM, T0, total=3, single_3=True),
     episode(Risk.LOW_MEDIUM, T0, episode_id="new", total=3, any_single_3=True, score_event_id="score-1"),
     [("raised", Risk.LOW_MEDIUM, T0 + H)]),
    ("none+incomplete-low-medium", None, facts(Risk.LOW_MEDIUM, T0, single_3=True, complete=False),
     episode(Risk.LOW_MEDIUM, T0, episode_id="new", total=None, any_single_3=True, score_event_id="score-1"),
     [("raised", Risk.LOW_MEDIUM, T0 + H)]),
    ("none+medium", None, facts(Risk.MEDIUM, T0, total=5),
     episode(Risk.MEDIUM, T0, episode_id="new", total=5, score_event_id="score-1"),
     [("raised", Risk.MEDIUM, T0 + H)]),
    ("none+high", None, facts(Risk.HIGH, T0, total=9), RAISED_HIGH, [("raised", Risk.HIGH, T0 + 30 * MIN)]),
    ("amber+red upgrades", ACKED_AMBER, facts(Risk.HIGH, T0 + 20 * MIN, total=8), UPGRADED,
     [("upgraded", Risk.HIGH, T0 + 50 * MIN)]),
    ("low-medium+medium upgrades", episode(Risk.LOW_MEDIUM, T0, total=3, any_single_3=True),
     facts(Risk.MEDIUM, T0 + 10 * MIN, total=6),
     episode(Risk.MEDIUM, T0 + 10 * MIN, total=6, score_event_id="score-1",
             earlier_bands=(episode(Risk.LOW_MEDIUM, T0, total=3, any_single_3=True),)),
     [("upgraded", Risk.MEDIUM, T0 + 70 * MIN)]),
    ("red+amber: no transition", OPEN_RED, facts(Risk.MEDIUM, T0 + 10 * MIN, total=5), OPEN_RED, []),
    ("red+low-medium: no transition", OPEN_RED, facts(Risk.LOW_MEDIUM, T0 + 10 * MIN, total=3), OPEN_RED, []),
    ("red+red: no transition", OPEN_RED, facts(Risk.HIGH, T0 + 10 * MIN, total=12), OPEN_RED, []),
    ("open+first low starts the low clock", OPEN_RED, facts(Risk.LOW, T0 + H, total=1), LOW_SINCE_1H, []),
    ("open+low keeps the first low time", LOW_SINCE_1H, facts(Risk.LOW, T0 + 2 * H, total=0), LOW_SINCE_1H, []),
    ("low just under 72 h", LOW_SINCE_1H, facts(Risk.LOW, T0 + H + 72 * H - S, total=0), LOW_SINCE_1H, []),
    ("low for 72 h resolves", LOW_SINCE_1H, facts(Risk.LOW, T0 + H + 72 * H, total=0), None,
     [("resolved", Risk.HIGH, T0 + 30 * MIN)]),
    ("escalating score resets the low clock", LOW_SINCE_1H, facts(Risk.MEDIUM, T0 + 2 * H, total=5), OPEN_RED, []),
    ("incomplete low never counts", OPEN_RED, facts(Risk.LOW, T0 + H, complete=False), OPEN_RED, []),
    ("incomplete low after 72 h does not resolve", LOW_SINCE_1H, facts(Risk.LOW, T0 + 80 * H, complete=False),
     LOW_SINCE_1H, []),
]


@pytest.mark.parametrize(("open_episode", "score", "expected", "transitions"),
                         [row[1:] for row in ON_SCORE], ids=[row[0] for row in ON_SCORE])
def test_on_score(open_episode, score, expected, transitions):
    after, happened = on_score(open_episode, score, RULES, "new")
    assert after == expected
    resolved = ["scores low for 72 h" if status == "resolved" else None for status, _, _ in transitions]
    # A resolved transition carries the episode as it was; the others the episode afterwards.
    assert happened == [
        Transition(status, open_episode if status == "resolved" else expected, score.occurred_at, why)
        for (status, _, _), why in zip(transitions, resolved)
    ]
    assert [(t.episode.risk, t.episode.deadline_at) for t in happened] == [(r, d) for _, r, d in transitions]


def test_an_escalation_between_low_scores_restarts_the_72_hours():
    scores = [
        facts(Risk.HIGH, T0, total=8),
        facts(Risk.LOW, T0 + H, total=1),
        facts(Risk.MEDIUM, T0 + 10 * H, total=5),  # still unwell: the low clock starts again
        facts(Risk.LOW, T0 + 11 * H, total=1),
        facts(Risk.LOW, T0 + 73 * H, total=1),  # 72 h after the first low, but only 62 h after the second
        facts(Risk.LOW, T0 + 83 * H, total=0),  # 72 h after the low that followed the medium
    ]
    current, statuses = None, []
    for score in scores:
        current, happened = on_score(current, score, RULES, "ep")
        statuses.append([(t.status, t.at) for t in happened])
    assert statuses == [[("raised", T0)], [], [], [], [], [("resolved", T0 + 83 * H)]]
    assert current is None


def test_a_resolution_after_seconds_names_the_seconds(tmp_path):
    rules = load_rules(write_rules(tmp_path))  # low_for_s = 90
    opened = replace(OPEN_RED, low_since=T0)
    _, happened = on_score(opened, facts(Risk.LOW, T0 + 90 * S), rules, "new")
    assert [(t.status, t.resolution) for t in happened] == [("resolved", "scores low for 90 s")]


def test_the_deadline_comes_from_the_rules_in_use(tmp_path):
    rules = load_rules(write_rules(tmp_path))  # high 2 s, medium 4 s, low-medium 3 s
    raised = [on_score(None, facts(risk, T0), rules, "new")[0].deadline_at
              for risk in (Risk.LOW_MEDIUM, Risk.MEDIUM, Risk.HIGH)]
    assert raised == [T0 + 3 * S, T0 + 4 * S, T0 + 2 * S]


# ---------------------------------------------------------------------------------------------------
# acknowledgement and clinical review

AMBER_THEN_RED = replace(
    episode(Risk.HIGH, T0 + 10 * MIN, total=9, score_event_id="score-1"),
    earlier_bands=(episode(Risk.LOW_MEDIUM, T0, total=3, score_event_id="score-0"),
                   episode(Risk.MEDIUM, T0 + 5 * MIN, total=5, score_event_id="score-01")))
LOW_MEDIUM_BAND, MEDIUM_BAND = AMBER_THEN_RED.earlier_bands


def with_band(band_index: int, at: datetime, by: str) -> Episode:
    bands = list(AMBER_THEN_RED.earlier_bands)
    bands[band_index] = replace(bands[band_index], acknowledged_at=at, acknowledged_by=by)
    return replace(AMBER_THEN_RED, earlier_bands=tuple(bands))


ACK = [
    # (name, open episode, made at, by, episode afterwards, the band acknowledged (None: nothing))
    ("first counts", episode(), T0 + 5 * MIN, "nurse-1",
     episode(acknowledged_at=T0 + 5 * MIN, acknowledged_by="nurse-1"),
     episode(acknowledged_at=T0 + 5 * MIN, acknowledged_by="nurse-1")),
    ("second ignored", episode(acknowledged_at=T0 + 5 * MIN, acknowledged_by="nurse-1"), T0 + 9 * MIN, "nurse-2",
     episode(acknowledged_at=T0 + 5 * MIN, acknowledged_by="nurse-1"), None),
    ("none open", None, T0, "nurse-1", None, None),
    ("made before the episode began", episode(), T0 - S, "nurse-1", episode(), None),
    ("at the upgrade: answers red", AMBER_THEN_RED, T0 + 10 * MIN, "nurse-1",
     replace(AMBER_THEN_RED, acknowledged_at=T0 + 10 * MIN, acknowledged_by="nurse-1"),
     replace(AMBER_THEN_RED, acknowledged_at=T0 + 10 * MIN, acknowledged_by="nurse-1")),
    ("just before the upgrade: answers medium", AMBER_THEN_RED, T0 + 10 * MIN - S, "nurse-1",
     with_band(1, T0 + 10 * MIN - S, "nurse-1"),
     replace(MEDIUM_BAND, acknowledged_at=T0 + 10 * MIN - S, acknowledged_by="nurse-1")),
    ("while low-medium: answers low-medium", AMBER_THEN_RED, T0 + MIN, "nurse-1",
     with_band(0, T0 + MIN, "nurse-1"), replace(LOW_MEDIUM_BAND, acknowledged_at=T0 + MIN, acknowledged_by="nurse-1")),
    ("an earlier band's second ignored", with_band(1, T0 + 6 * MIN, "nurse-1"), T0 + 7 * MIN, "nurse-2",
     with_band(1, T0 + 6 * MIN, "nurse-1"), None),
    ("before every band", AMBER_THEN_RED, T0 - S, "nurse-1", AMBER_THEN_RED, None),
]


@pytest.mark.parametrize(("open_episode", "at", "by", "expected", "band"), [row[1:] for row in ACK],
                         ids=[row[0] for row in ACK])
def test_on_acknowledgement(open_episode, at, by, expected, band):
    after, happened = on_acknowledgement(open_episode, at, by)
    assert after == expected
    assert happened == ([] if band is None else [Transition("acknowledged", band, at)])


def test_an_upgrade_needs_a_new_acknowledgement():
    acked, _ = on_acknowledgement(episode(Risk.MEDIUM, T0), T0 + 5 * MIN, "nurse-1")
    upgraded, _ = on_score(acked, facts(Risk.HIGH, T0 + 10 * MIN, total=9), RULES, "unused")
    again, happened = on_acknowledgement(upgraded, T0 + 12 * MIN, "nurse-2")
    assert [(t.status, t.episode.risk, t.episode.acknowledged_by) for t in happened] == [
        ("acknowledged", Risk.HIGH, "nurse-2")]
    assert escalation_overdue(again, T0 + 2 * H) is False


def test_an_acknowledgement_made_before_the_upgrade_does_not_acknowledge_red():
    """Amber acknowledged at +5 min but delivered after red was raised at +10 min (within lateness): it answers
    amber, as it would have if read first, and red still needs its own acknowledgement."""
    amber = episode(Risk.MEDIUM, T0)
    upgraded, _ = on_score(amber, facts(Risk.HIGH, T0 + 10 * MIN, total=9), RULES, "unused")
    after, happened = on_acknowledgement(upgraded, T0 + 5 * MIN, "nurse-1")
    answered = replace(amber, acknowledged_at=T0 + 5 * MIN, acknowledged_by="nurse-1")
    assert (after, happened) == (replace(upgraded, earlier_bands=(answered,)),
                                 [Transition("acknowledged", answered, T0 + 5 * MIN)])
    assert escalation_overdue(after, T0 + 40 * MIN) is True


SETTLED = [
    # (name, open episode, acknowledgement made at, settled)
    ("no episode: a score still to be read may open one", None, T0, False),
    ("amber, made after it was raised: a later-read score may upgrade it", episode(Risk.MEDIUM), T0 + MIN, False),
    ("amber, made as it was raised", episode(Risk.MEDIUM), T0, False),
    ("low-medium, made after it was raised", episode(Risk.LOW_MEDIUM), T0 + MIN, False),
    ("red, made after it was raised: nothing can upgrade red", episode(Risk.HIGH), T0 + MIN, True),
    ("red, made as it was raised", episode(Risk.HIGH), T0, True),
    ("red, made at its deadline", episode(Risk.HIGH), T0 + 30 * MIN, True),
    ("red, made after its deadline: an unread review may have closed it", episode(Risk.HIGH),
     T0 + 30 * MIN + S, False),
    ("made before the open band: an earlier band's, or none", episode(Risk.MEDIUM), T0 - S, True),
]


@pytest.mark.parametrize(("open_episode", "at", "expected"), [row[1:] for row in SETTLED],
                         ids=[row[0] for row in SETTLED])
def test_band_settled(open_episode, at, expected):
    assert band_settled(open_episode, at) is expected


RISKS = st.sampled_from([Risk.LOW, Risk.LOW_MEDIUM, Risk.MEDIUM, Risk.HIGH])


@given(risks=st.lists(RISKS, min_size=1, max_size=6),
       acknowledged_at_min=st.lists(st.integers(min_value=-5, max_value=70), max_size=4))
def test_an_acknowledgement_read_after_later_scores_answers_the_same_band(risks, acknowledged_at_min):
    """Scores every 10 minutes (never low for 72 h, so the episode stays open), acknowledgements at any minute:
    reading every acknowledgement after all the scores acknowledges the same bands, at the same times, as
    reading everything in event-time order. What must wait is only an acknowledgement of a band a later-read
    score could still upgrade (`band_settled`), which the stream holds back."""
    scores = [facts(risk, T0 + 10 * MIN * n, total=n, event_id=f"score-{n}") for n, risk in enumerate(risks)]
    # Acknowledgements are read in the order they were made (one topic, ordered per resident).
    acks = [(T0 + minute * MIN, f"nurse-{i}") for i, minute in enumerate(sorted(acknowledged_at_min))]

    def acknowledged(steps: list) -> tuple[Episode | None, set]:
        current, answered = None, set()
        for step in steps:
            if isinstance(step, ScoreFacts):
                current, _ = on_score(current, step, RULES, "ep")
            else:
                current, happened = on_acknowledgement(current, *step)
                answered |= {(t.episode.score_event_id, t.episode.risk, t.at, t.episode.acknowledged_by)
                             for t in happened}
        return current, answered

    # Event-time order; an acknowledgement made at the same instant as a score is read after it.
    in_order = sorted([*scores, *acks], key=lambda s: (s.occurred_at, 0) if isinstance(s, ScoreFacts) else (s[0], 1))
    assert acknowledged([*scores, *acks]) == acknowledged(in_order)


def test_a_clinical_review_resolves():
    opened = episode()
    assert on_clinical_review(opened, T0 + 40 * MIN, "GP visited, antibiotics") == (
        None, [Transition("resolved", opened, T0 + 40 * MIN, "clinical review: GP visited, antibiotics")])
    assert on_clinical_review(None, T0, "routine") == (None, [])


# ---------------------------------------------------------------------------------------------------
# escalation_overdue and judgement_clock

OVERDUE = [
    ("before deadline", episode(), T0 + H - S, False),
    ("at deadline", episode(), T0 + H, True),
    ("after deadline", episode(), T0 + 5 * H, True),
    ("acknowledged", episode(acknowledged_at=T0 + 2 * MIN, acknowledged_by="nurse-1"), T0 + 5 * H, False),
    ("already reported", episode(overdue_reported=True), T0 + 5 * H, False),
    ("no episode", None, T0 + 5 * H, False),
]


@pytest.mark.parametrize(("open_episode", "clock", "expected"), [row[1:] for row in OVERDUE],
                         ids=[row[0] for row in OVERDUE])
def test_escalation_overdue(open_episode, clock, expected):
    assert escalation_overdue(open_episode, clock) is expected


LATENESS = 120 * S  # packaged allowed_lateness_s
CLOCK = [
    # (name, stream time, wall now, idle for s, expected)
    ("flowing: stream time", T0, T0 + 10 * MIN, 0.0, T0 - LATENESS),
    ("flowing just under idle", T0, T0 + 10 * MIN, 4.9, T0 - LATENESS),
    ("idle: wall clock moves time on", T0, T0 + 10 * MIN, 5.0, T0 + 10 * MIN - LATENESS),
    ("idle: stream ahead of wall is clamped", T0 + H, T0, 60.0, T0 - LATENESS),
    ("flowing: fast device clock is clamped", T0 + H, T0, 0.0, T0 - LATENESS),
    ("nothing seen, idle", None, T0, 60.0, T0 - LATENESS),
    ("nothing seen, not idle", None, T0, 1.0, None),
]


@pytest.mark.parametrize(("stream", "wall", "idle_s", "expected"), [row[1:] for row in CLOCK],
                         ids=[row[0] for row in CLOCK])
def test_judgement_clock(stream, wall, idle_s, expected):
    assert judgement_clock(stream, wall, idle_s, RULES) == expected


# ---------------------------------------------------------------------------------------------------
# serialisation

@pytest.mark.parametrize("stored", [
    episode(),
    episode(Risk.LOW_MEDIUM, total=None, any_single_3=True),
    episode(Risk.HIGH, acknowledged_at=T0 + MIN, acknowledged_by="nurse-1", overdue_reported=True,
            low_since=T0 + 2 * H),
    with_band(1, T0 + 6 * MIN, "nurse-1"),
], ids=["fresh", "incomplete", "everything-set", "earlier-bands"])
def test_episode_json_round_trip(stored):
    assert Episode.from_json(json.loads(json.dumps(stored.to_json()))) == stored
