"""`carepulse indicators recompute`: an event log file in, the batch oracle's indicators out."""

from __future__ import annotations

import json
from datetime import timedelta

from typer.testing import CliRunner

from carepulse import events
from carepulse.cli import cli
from carepulse.demo import demo_quality_rules
from carepulse.indicators_tool import as_json, default_as_of
from indicators import quality
from indicators.recompute import recompute
from tests.indicators import test_recompute as hand_built

runner = CliRunner()


def write_log(path, log) -> None:
    path.write_text("".join(events.to_json(event).decode() + "\n" for event in log) + "\n")


def test_json_output_is_the_oracle_over_the_files(tmp_path) -> None:
    log = hand_built.care_home() + hand_built.homecare()
    write_log(tmp_path / "a.jsonl", log[: len(log) // 2])
    write_log(tmp_path / "b.jsonl", log[len(log) // 2:])
    result = runner.invoke(cli, ["indicators", "recompute", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"),
                                 "--as-of", "2026-11-23T09:00+00:00", "--beds", "home-a=30", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    # What the worker publishes under the packaged rules: the ten core indicators, continuity and travel.
    streamed = quality.streamed_indicator_ids(quality.packaged_rules())
    assert len(streamed) == 12 and "urinalysis_timeliness" not in streamed
    expected = recompute(log, as_of=hand_built.AS_OF, bed_counts={"home-a": 30}, indicator_ids=streamed)
    assert lines == [json.loads(json.dumps(as_json(value))) for value in expected]
    assert lines[0]["window_start"] == "2026-08-25T09:00:00+00:00"  # 90-day falls window of a 30-bed home


def test_table_output_defaults_to_the_minute_after_the_newest_event(tmp_path) -> None:
    log = hand_built.care_home()
    write_log(tmp_path / "log.jsonl", log)
    result = runner.invoke(cli, ["indicators", "recompute", str(tmp_path / "log.jsonl")])
    assert result.exit_code == 0, result.output
    newest = max(e.occurred_at for e in log)
    as_of = default_as_of(log)
    assert as_of == newest.replace(second=0, microsecond=0) + timedelta(minutes=1)
    assert result.output.splitlines()[0] == f"{len(log)} events; indicators as of {as_of.isoformat()}"
    falls = next(line for line in result.output.splitlines() if "falls_rate" in line)
    assert falls.split()[:3] == ["home-a", "falls_rate", "insufficient_data"]


def test_a_line_that_is_not_an_event_is_named(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    write_log(path, hand_built.care_home()[:2])
    path.write_text(path.read_text() + '{"event_type": "fall"}\n')
    result = runner.invoke(cli, ["indicators", "recompute", str(path)])
    assert result.exit_code == 2
    assert f"{path}, line 4: not an event:" in result.output


def test_bad_options_are_refused_with_a_sentence(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    write_log(path, hand_built.care_home()[:2])
    no_offset = runner.invoke(cli, ["indicators", "recompute", str(path), "--as-of", "2026-11-23T09:00:00"])
    assert no_offset.exit_code == 2
    bad_beds = runner.invoke(cli, ["indicators", "recompute", str(path), "--beds", "home-a"])
    assert bad_beds.exit_code == 2 and "--beds takes LOCATION=COUNT" in bad_beds.output
    missing = runner.invoke(cli, ["indicators", "recompute", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    path.write_text("\n")
    assert "the event log is empty" in runner.invoke(cli, ["indicators", "recompute", str(path)]).output


def test_the_worker_rules_file_decides_what_is_recomputed(tmp_path, monkeypatch) -> None:
    """An auditor gives the rules file the worker used: with the urinalysis pathway on, urinalysis
    timeliness is recomputed too, and the rules' version is the one on every value."""
    log = hand_built.care_home() + hand_built.homecare()
    write_log(tmp_path / "log.jsonl", log)
    rules_path = demo_quality_rules(tmp_path)
    rules = quality.load_rules(rules_path)
    expected = [json.loads(json.dumps(as_json(value))) for value in recompute(
        log, as_of=hand_built.AS_OF, rules=rules, indicator_ids=quality.streamed_indicator_ids(rules))]
    assert {line["indicator_id"] for line in expected} == set(quality.ALL_INDICATOR_IDS)
    args = ["indicators", "recompute", str(tmp_path / "log.jsonl"), "--as-of", "2026-11-23T09:00+00:00", "--json"]
    by_option = runner.invoke(cli, [*args, "--rules", str(rules_path)])
    monkeypatch.setenv("CAREPULSE_QUALITY_RULES_PATH", str(rules_path))
    by_setting = runner.invoke(cli, args)
    for result in (by_option, by_setting):
        assert result.exit_code == 0, result.output
        assert [json.loads(line) for line in result.output.splitlines()] == expected
    assert {line["rules_version"] for line in expected} == {rules.version} != {quality.packaged_rules().version}


def test_indicator_option_restricts_the_recomputation(tmp_path) -> None:
    log = hand_built.care_home()
    write_log(tmp_path / "log.jsonl", log)
    result = runner.invoke(cli, ["indicators", "recompute", str(tmp_path / "log.jsonl"), "--json",
                                 "--indicator", "hydration_days_met", "--indicator", "falls_rate"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["indicator_id"] for line in lines] == ["hydration_days_met", "falls_rate"]


def test_an_unknown_indicator_or_a_broken_rules_file_is_refused_with_a_sentence(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    write_log(path, hand_built.care_home()[:2])
    unknown = runner.invoke(cli, ["indicators", "recompute", str(path), "--indicator", "happiness"])
    assert unknown.exit_code == 2 and "no indicator happiness; known: falls_rate" in unknown.output
    (tmp_path / "rules.toml").write_text('rules_version = "x"\n[indicators.nonsense]\n')
    broken = runner.invoke(cli, ["indicators", "recompute", str(path), "--rules", str(tmp_path / "rules.toml")])
    assert broken.exit_code == 2 and "is refused: quality rules: unknown indicator nonsense." in broken.output
    missing = runner.invoke(cli, ["indicators", "recompute", str(path), "--rules", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "cannot read the rules file" in missing.output
