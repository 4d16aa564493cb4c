"""`carepulse dashboards build --check` and `push`: the commands around dashboards/build.py and push.py."""

from __future__ import annotations

from typer.testing import CliRunner

from carepulse.cli import cli
from tests.kafka_helpers import free_port

runner = CliRunner()


def test_build_check_passes_on_the_committed_json() -> None:
    result = runner.invoke(cli, ["dashboards", "build", "--check"])
    assert result.exit_code == 0, result.output


def test_push_to_an_unreachable_grafana_fails_with_a_sentence() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(cli, ["dashboards", "push", "--url", url, "--token", "t"])
    assert result.exit_code == 2
    assert f"pushing the dashboards to {url} failed" in result.output
