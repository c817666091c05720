"""``provgen keys``: development CA and signing certificate; inspect the active identity."""

from __future__ import annotations

import click

from provgen.cli._common import emit_json, json_option, settings_from


@click.group()
def keys() -> None:
    """Manage C2PA signing keys (development CA, or show the organisation's identity)."""


@keys.command("init")
@click.option("--force", is_flag=True, help="Replace existing development keys (old images stay verifiable "
              "only if you keep the old ca.pem as a trust anchor).")
@json_option
def init(force: bool, as_json: bool) -> None:
    """Create a development root CA and an ES256 signing certificate under $PROVGEN_HOME/keys."""
    from provgen.provenance.keys import init_dev_keys

    settings = settings_from()
    paths = init_dev_keys(settings.keys_dir, force=force)
    data = {"ca_cert": str(paths.ca_cert), "signer_chain": str(paths.signer_chain),
            "signer_key": str(paths.signer_key)}
    if as_json:
        emit_json(data)
    else:
        click.echo(f"created development keys in {settings.keys_dir}")
        click.echo(f"  trust anchor (share with verifiers): {paths.ca_cert}")
        click.echo(f"  signing chain: {paths.signer_chain}")


@keys.command("show")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Show this PEM chain instead of the configured one.")
@json_option
def show(cert: str | None, as_json: bool) -> None:
    """Show the signing certificate in use (PROVGEN_CERT, else the development one)."""
    from pathlib import Path

    from provgen.core.errors import KeyConfigError
    from provgen.provenance.certificates import describe_certificate

    settings = settings_from()
    path = Path(cert) if cert else (settings.cert_path or settings.keys_dir / "signer.pem")
    if not path.is_file():
        raise KeyConfigError(f"`--cert`: no certificate at {str(path)!r}; run `provgen keys init` first")
    info = describe_certificate(path.read_bytes())
    info["path"] = str(path)
    if as_json:
        emit_json(info)
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")


COMMANDS = [keys]
