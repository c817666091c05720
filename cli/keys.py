"""``provgen keys``: development CA and signing certificate; inspect the active identity."""

from __future__ import annotations

from pathlib import Path

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
    """Show the signing certificate in use (PROVGEN_CERT, else the imported one, else the development one)."""
    from provgen.core.errors import KeyConfigError
    from provgen.provenance.certificates import describe_certificate

    settings = settings_from()
    imported = settings.keys_dir / "org" / "signer.pem"
    default = imported if imported.is_file() else settings.keys_dir / "signer.pem"
    path = Path(cert) if cert else (settings.cert_path or default)
    if not path.is_file():
        raise KeyConfigError(f"`--cert`: no certificate at {str(path)!r}; run `provgen keys init` first")
    info = describe_certificate(path.read_bytes())
    info["path"] = str(path)
    if as_json:
        emit_json(info)
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")


@keys.command("import")
@click.option("--chain", "chain_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM certificate chain, leaf first (with --key).")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="PEM private key of the leaf (with --chain); encrypted keys ask for their password.")
@click.option("--pkcs12", "pkcs12_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A PKCS#12 bundle (.p12/.pfx) with the key and its chain, instead of --chain/--key.")
@click.option("--force", is_flag=True, help="Replace an identity imported before.")
@json_option
def import_(chain_path: Path | None, key_path: Path | None, pkcs12_path: Path | None, force: bool,
            as_json: bool) -> None:
    """Import an organisation's signing certificate and key into $PROVGEN_HOME/keys/org.

    \b
    The password of an encrypted key or bundle comes from PROVGEN_KEY_PASSWORD, else from a prompt (never
    from the command line). The chain is checked against what C2PA requires before anything is written; the
    key is stored decrypted with mode 0600. From then on `provgen generate` signs with it (PROVGEN_CERT and
    PROVGEN_KEY still take precedence).
    """
    import os
    import sys

    from provgen.core.errors import KeyConfigError
    from provgen.provenance.certificates import describe_certificate
    from provgen.provenance.org_keys import expiry_warning, import_identity

    settings = settings_from()
    password = os.environ.get("PROVGEN_KEY_PASSWORD")
    try:
        identity = import_identity(settings.keys_dir, chain_path=chain_path, key_path=key_path,
                                   pkcs12_path=pkcs12_path, password=password.encode() if password else None,
                                   force=force)
    except KeyConfigError as error:
        if password is not None or not _needs_password(str(error)) or not sys.stdin.isatty():
            raise
        typed = click.prompt("password of the private key", hide_input=True, err=True)
        identity = import_identity(settings.keys_dir, chain_path=chain_path, key_path=key_path,
                                   pkcs12_path=pkcs12_path, password=typed.encode(), force=force)
    info = describe_certificate(identity.chain_pem)
    info["stored_in"] = str(settings.keys_dir / "org")
    warning = expiry_warning(identity)
    if warning:
        click.echo(f"provgen: warning: {warning}", err=True)
    if as_json:
        emit_json(info)
    else:
        click.echo(f"imported the signing identity into {info['stored_in']}")
        for key, value in info.items():
            if key != "stored_in":
                click.echo(f"  {key}: {value}")


def _needs_password(message: str) -> bool:
    return "is encrypted" in message or "could not be opened" in message


COMMANDS = [keys]
