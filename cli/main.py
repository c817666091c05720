"""The ``provgen`` command line: the group, and the one place where errors become click errors."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from provgen.core.errors import ProvgenError

__all__ = ["cli", "main", "build_cli"]


class ProvgenGroup(click.Group):
    """Maps :class:`ProvgenError` to a one-line message and its exit status; loads plugin commands lazily."""

    _plugins_added = False

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ProvgenError as error:
            raise _ProvgenClickError(str(error), error.exit_code) from error
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt, BrokenPipeError):
            raise
        except Exception as error:  # a bug, not a user error: say so without a traceback
            if os.environ.get("PROVGEN_DEBUG"):
                raise
            raise _ProvgenClickError(
                f"internal error: {type(error).__name__}: {error} (set PROVGEN_DEBUG=1 for the traceback "
                "and please report it)", 1) from error

    def _add_plugin_commands(self) -> None:
        if self._plugins_added:
            return
        self._plugins_added = True
        from provgen.core.plugins import call_hook, get_plugin_manager

        call_hook(get_plugin_manager(), "register_commands", cli=self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            try:
                self._add_plugin_commands()
            except ProvgenError as error:
                raise _ProvgenClickError(str(error), error.exit_code) from error
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            self._add_plugin_commands()
        except ProvgenError as error:  # --help still works with a broken plugin installed
            click.echo(f"warning: {error}", err=True)
        return super().list_commands(ctx)


class _ProvgenClickError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_cli() -> click.Group:
    from provgen.cli import batch, generate, keys, lineage, models, plugins, registry, verify, watermark

    @click.group(cls=ProvgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="provgen")
    def group() -> None:
        """provgen: generate images with diffusion models, every one watermarked, C2PA-signed and registered.

        \b
        Quick start:
          provgen generate "a red circle on a blue background" --out ./out
          provgen verify out/*.png
          provgen batch jobs.jsonl --out ./out --workers 2

        Settings come from the environment: PROVGEN_HOME (default ~/.provgen), PROVGEN_REGISTRY_URL
        (default sqlite:///$PROVGEN_HOME/registry.db), PROVGEN_CERT/PROVGEN_KEY (signing identity; else
        the one from `keys import`), PROVGEN_KEY_PASSWORD, PROVGEN_TSA_URL (timestamp authority),
        PROVGEN_TRUST_ANCHORS, PROVGEN_USER, PROVGEN_MODEL, PROVGEN_DEVICE, PROVGEN_DTYPE,
        PROVGEN_WATERMARK, PROVGEN_TRAINING_MINING, PROVGEN_BLOCKLIST, PROVGEN_PLUGINS, PROVGEN_DISABLE_PLUGIN_AUTOLOAD,
        PROVGEN_DEBUG (tracebacks).
        """

    for module in (generate, batch, verify, keys, models, plugins, registry, lineage, watermark):
        for command in module.COMMANDS:
            group.add_command(command)
    return group


cli = build_cli()


def main() -> None:
    try:
        cli(prog_name="provgen")
    except BrokenPipeError:
        # the reader went away (`provgen ... | head`): not an error; silence the flush at exit too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
