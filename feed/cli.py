"""``carepulse feed``: run the regulator feed and manage its API keys and locations.

Register with ``cli.add_typer(feed_app, name="feed")`` in carepulse/cli.py. Every command works on the
database named by CAREPULSE_FEED_DATABASE_URL (default: SQLite in the data directory) and migrates it first.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from carepulse import events
from carepulse.settings import Settings

feed_app = typer.Typer(help="The always-on regulator feed (HTTP API over the indicator and escalation topics).",
                       no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
keys_app = typer.Typer(help="API keys: create (the secret is shown once, optionally expiring), list, revoke.",
                       no_args_is_help=True)
locations_app = typer.Typer(help="Which provider owns which location.", no_args_is_help=True)
feed_app.add_typer(keys_app, name="keys")
feed_app.add_typer(locations_app, name="locations")


def _engine():
    from feed import db

    engine = db.make_engine(db.database_url(Settings()))
    db.migrate(engine)
    return engine


def _fail(message: str) -> typer.Exit:
    typer.echo(f"carepulse feed: {message}", err=True)
    return typer.Exit(2)


@feed_app.command()
def serve() -> None:
    """Serve the feed API (CAREPULSE_FEED_HOST / CAREPULSE_FEED_PORT) and consume the topics into the database."""
    from feed.service import run_feed

    run_feed(Settings())


@feed_app.command()
def migrate() -> None:
    """Create or upgrade the feed database schema and exit."""
    from feed import db

    _engine()
    typer.echo(f"feed database at the newest schema ({db.database_url(Settings()).split('@')[-1]})")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="'regulator' or 'provider:<provider id>'.")],
    name: Annotated[str, typer.Option(help="Who holds the key (a person or system): access is attributable.")],
    expires_in_days: Annotated[Optional[int], typer.Option(
        help="The key stops working this many days from now (answered 401 like a revoked key); "
             "omitted: until revoked.")] = None,
) -> None:
    """Create a key and print its secret once; only a hash of it is stored."""
    from feed import auth

    now = events.utc_now()
    try:
        key_id, token = auth.create_key(_engine(), role=role, name=name, now=now, expires_in_days=expires_in_days)
    except auth.KeyManagementError as exc:
        raise _fail(str(exc)) from None
    expires = "never (until revoked)"
    if expires_in_days is not None:
        from datetime import timedelta

        expires = f"{now + timedelta(days=expires_in_days):%Y-%m-%d %H:%M} UTC"
    typer.echo(f"key id:  {key_id}\nrole:    {role}\nexpires: {expires}\nsecret:  {token}")
    typer.echo("Store the secret now: it is not kept and cannot be shown again. "
               "Send it as 'Authorization: Bearer <secret>'.", err=True)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (never their secrets)."""
    from feed import auth

    keys = auth.list_keys(_engine())
    if not keys:
        typer.echo("no keys")
    now = events.utc_now()
    for key in keys:
        if key["revoked_at"]:
            state = f"revoked {key['revoked_at']:%Y-%m-%d %H:%M}"
        elif key["expires_at"] and key["expires_at"] <= now:
            state = f"expired {key['expires_at']:%Y-%m-%d %H:%M}"
        elif key["expires_at"]:
            state = f"expires {key['expires_at']:%Y-%m-%d %H:%M}"
        else:
            state = "active"
        typer.echo(f"{key['key_id']}  {key['role']:<30} {state:<24} {key['name']}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id shown by `keys list`.")]) -> None:
    """Revoke a key: it stops working at once."""
    from feed import auth

    try:
        auth.revoke_key(_engine(), key_id, now=events.utc_now())
    except auth.KeyManagementError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"revoked {key_id}")


@locations_app.command("add")
def locations_add(
    location_id: Annotated[str, typer.Argument(help="The location id used on the topics.")],
    provider: Annotated[str, typer.Option(help="The provider that owns the location.")],
    name: Annotated[Optional[str], typer.Option(help="Display name.")] = None,
) -> None:
    """Register a location to its provider (or move it to another provider)."""
    from pydantic import TypeAdapter, ValidationError

    from feed import auth

    try:
        TypeAdapter(events.Identifier).validate_python(location_id)
        TypeAdapter(events.Identifier).validate_python(provider)
    except ValidationError:
        raise _fail("location and provider ids are 1-64 letters, digits and _ . : - , starting with a letter or digit") from None
    auth.register_location(_engine(), location_id, provider_id=provider, name=name, now=events.utc_now())
    typer.echo(f"location {location_id} registered to provider {provider}")


@locations_app.command("list")
def locations_list() -> None:
    """List locations, registered and learned from the topics (provider unknown)."""
    from sqlalchemy import select

    from feed import db

    with _engine().connect() as conn:
        rows = conn.execute(select(db.locations).order_by(db.locations.c.location_id)).mappings().all()
    if not rows:
        typer.echo("no locations")
    for row in rows:
        provider = row["provider_id"] or "(provider unknown)"
        typer.echo(f"{row['location_id']:<24} {provider:<24} {row['name'] or ''}")
