"""`freight ui`: the dashboard over a store, on loopback unless told otherwise (then behind a token)."""

from __future__ import annotations

import ipaddress
import secrets
import socket

import typer

from freight.domain import ExitCode, FreightError

TOKEN_ENV = "FREIGHT_UI_TOKEN"


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    @app.command()
    def ui(
        db: str | None = typer.Option(
            None, "--db", help="The store (a path or a URL; default: $FREIGHT_DB, else ~/.freight/freight.db)."
        ),
        port: int = typer.Option(8788, help="Port to listen on."),
        host: str = typer.Option("127.0.0.1", help="Address to bind; loopback by default. Any other needs a token."),
        token: str | None = typer.Option(
            None,
            envvar=TOKEN_ENV,
            help="The token a browser must present when the host is not loopback "
            "(default: a random one, printed in the address).",
        ),
    ) -> None:
        """Open a web dashboard over the store: jobs, batches, failures, fixes, cost, every document's lineage."""
        import uvicorn

        from freight.store import default_db
        from freight.ui import create_app

        try:  # a port already taken is the usual mistake: say so before opening anything
            with socket.create_server((host, port)):
                pass
        except OSError as exc:
            typer.secho(f"error: cannot listen on {host}:{port}: {exc.strerror or exc} (--port picks another)",
                        err=True, fg=typer.colors.RED)  # fmt: skip
            raise typer.Exit(ExitCode.USAGE) from None
        if not loopback(host) and not token:
            token = secrets.token_urlsafe(24)
        try:
            app_ = create_app(db or default_db(), token=token if not loopback(host) or token else None)
        except FreightError as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(ExitCode.USAGE) from None
        except Exception as exc:  # noqa: BLE001 - a store that cannot be opened: say which, no traceback
            typer.secho(f"error: cannot open the store {db or default_db()!r}: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(ExitCode.USAGE) from None
        address = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        typer.echo(f"freight ui: {address}{'?token=' + token if token else ''}  (Ctrl-C stops it)")
        uvicorn.run(app_, host=host, port=port, log_level="warning")
