"""API keys that expire: the key works until its expiry instant and is refused from then on like a revoked
key; `feed keys create --expires-in-days`; the migration adding the column keeps existing keys working."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select
from typer.testing import CliRunner

from carepulse.settings import Settings
from feed import auth, db
from feed.api import create_feed_app
from feed.cli import feed_app
from tests.feed.conftest import NOW

REFUSED = {"error": "missing, invalid or revoked API key"}


def test_a_key_works_until_its_expiry_and_is_refused_from_then_on_like_a_revoked_one(engine):
    clock = {"now": NOW}
    app = create_feed_app(Settings(feed_consume=False), engine=engine, now=lambda: clock["now"])
    key_id, token = auth.create_key(engine, role="regulator", name="inspection team", now=NOW, expires_in_days=30)
    headers = {"Authorization": f"Bearer {token}"}
    expires_at = NOW + timedelta(days=30)
    assert next(k for k in auth.list_keys(engine) if k["key_id"] == key_id)["expires_at"] == expires_at
    with TestClient(app, raise_server_exceptions=False) as client:
        clock["now"] = expires_at - timedelta(microseconds=1)
        assert client.get("/v1/locations", headers=headers).status_code == 200
        for clock["now"] in (expires_at, expires_at + timedelta(days=400)):
            response = client.get("/v1/locations", headers=headers)
            assert (response.status_code, response.json()) == (401, REFUSED)
            assert response.headers["www-authenticate"] == "Bearer"
        # Revoking an expired key still works (and is still refused).
        auth.revoke_key(engine, key_id, now=clock["now"])
        assert client.get("/v1/locations", headers=headers).json() == REFUSED
    assert auth.authenticate(engine, token, now=NOW) is None  # revoked now, whatever the time


def test_a_key_without_expiry_works_until_revoked(engine):
    _, token = auth.create_key(engine, role="provider:prov-a", name="manager", now=NOW)
    assert auth.authenticate(engine, token, now=NOW + timedelta(days=36_500)).role == "provider:prov-a"


@pytest.mark.parametrize("days", [0, -1, auth.MAX_EXPIRY_DAYS + 1, True])
def test_an_expiry_must_be_a_sensible_number_of_days(engine, days):
    with pytest.raises(auth.KeyManagementError, match="a key expires 1 to 3660 days after it is created"):
        auth.create_key(engine, role="regulator", name="x", now=NOW, expires_in_days=days)
    assert auth.list_keys(engine) == []


def _alembic(engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(db.Path(db.__file__).parent / "migrations"))
    return config


def test_the_expiry_migration_keeps_existing_keys_working_and_reverses(engine):
    config = _alembic(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001_initial")
    assert "expires_at" not in {c["name"] for c in inspect(engine).get_columns("feed_api_keys")}
    token = auth.TOKEN_PREFIX + "an-existing-key-created-before-expiry-existed"
    with engine.begin() as conn:
        conn.execute(db.api_keys.insert().values(  # the 0001 columns only
            key_id="k0001", name="old", role="regulator", secret_sha256=auth.secret_hash(token), created_at=NOW))
    db.migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(select(db.api_keys.c.expires_at).where(db.api_keys.c.key_id == "k0001")).scalar_one() is None
    assert auth.authenticate(engine, token, now=NOW).key_id == "k0001"


def test_the_cli_creates_an_expiring_key_and_lists_its_expiry(tmp_path, monkeypatch):
    monkeypatch.setenv("CAREPULSE_FEED_DATABASE_URL", f"sqlite:///{tmp_path / 'feed.sqlite3'}")
    runner = CliRunner()
    created = runner.invoke(feed_app, ["keys", "create", "--role", "regulator", "--name", "CQC inspection",
                                       "--expires-in-days", "30"])
    assert created.exit_code == 0, created.output
    lines = dict(line.split(":", 1) for line in created.stdout.splitlines() if ":" in line)
    assert lines["expires"].strip().endswith("UTC") and lines["secret"].strip().startswith("cpf_")
    forever = runner.invoke(feed_app, ["keys", "create", "--role", "provider:prov-a", "--name", "manager"])
    assert "expires: never (until revoked)" in forever.stdout
    listed = runner.invoke(feed_app, ["keys", "list"])
    assert listed.exit_code == 0
    assert f"expires {lines['expires'].strip().removesuffix(' UTC')}" in listed.stdout
    assert "active" in listed.stdout and lines["secret"].strip() not in listed.stdout
    refused = runner.invoke(feed_app, ["keys", "create", "--role", "regulator", "--name", "x", "--expires-in-days", "0"])
    assert refused.exit_code == 2
    assert "a key expires 1 to 3660 days after it is created, not 0" in refused.stderr
