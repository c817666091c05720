"""Meta-tests that keep the documentation honest (datasette's pattern).

* docs/plugin_hooks.md has one ``## name(params)`` heading per hook in provgen.core.hookspecs, with exactly
  the spec's parameters in order, under the same banners and in the same order, and no heading for a hook
  that does not exist;
* docs/cli.md is what scripts/gen_cli_docs.py generates;
* every ``provgen <command> ...`` line in a fenced block of README.md and docs/*.md names real commands.
  A line whose comment says ``plugin command`` is skipped (commands that a plugin adds are not built in).
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from provgen.core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PLUGIN_HOOKS_MD = DOCS / "plugin_hooks.md"
HOOK_HEADING = re.compile(r"^## (?P<name>\w+)\((?P<params>[^)]*)\)\s*$")
BANNER_IN_SPECS = re.compile(r"^# (?P<banner>[A-Z]\w* hooks)\b")
#: fenced blocks in these languages hold code or data, never shell commands
NOT_SHELL = {"python", "py", "pycon", "toml", "json", "ini", "cfg", "yaml", "yml"}
SHELL_SEPARATORS = {"|", "||", "&&", ";"}
COMMAND_WORD = re.compile(r"^[a-z][a-z0-9_-]*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# ------------------------------------------------------------------------------------------- helpers


def spec_hooks() -> dict[str, list[str]]:
    """Hook name -> parameter names, in source order."""
    specs = [fn for fn in vars(hookspecs).values() if callable(fn) and hasattr(fn, "provgen_spec")]
    specs.sort(key=lambda fn: fn.__code__.co_firstlineno)
    return {fn.__name__: list(inspect.signature(fn).parameters) for fn in specs}


def classified_lines(text: str) -> Iterator[tuple[str, bool]]:
    """``(line, is_prose)``: prose lines are outside fenced code blocks and are not fences themselves."""
    fence: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            yield line, False
        elif fence is not None:
            if stripped.startswith(fence):
                fence = None
            yield line, False
        else:
            yield line, True


def outside_fences(text: str) -> Iterator[str]:
    """The lines of a markdown text that are not inside fenced code blocks."""
    return (line for line, prose in classified_lines(text) if prose)


def fenced_blocks(text: str) -> Iterator[tuple[str, list[str]]]:
    """``(language, lines)`` of every fenced code block (indented fences included)."""
    fence: str | None = None
    language, lines = "", []
    for line in text.splitlines():
        stripped = line.strip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence, language, lines = stripped[:3], stripped[3:].strip().lower(), []
        elif fence is not None and stripped.startswith(fence):
            yield language, lines
            fence = None
        elif fence is not None:
            lines.append(line)


def hook_sections(text: str) -> dict[str, tuple[list[str], str]]:
    """Hook heading name -> (parameters as written, the section's text up to the next heading)."""
    sections: dict[str, tuple[list[str], str]] = {}
    current: str | None = None
    for line, prose in classified_lines(text):
        match = HOOK_HEADING.match(line) if prose else None
        if match:
            name = match["name"]
            assert name not in sections, f"hook `{name}` is documented twice in {PLUGIN_HOOKS_MD.name}"
            params = [p.strip() for p in match["params"].split(",") if p.strip()]
            sections[name] = (params, "")
            current = name
        elif prose and line.startswith(("# ", "## ")):
            current = None
        elif current is not None:
            params, body = sections[current]
            sections[current] = (params, body + line + "\n")
    return sections


@pytest.fixture(scope="module")
def plugin_hooks_md() -> str:
    return PLUGIN_HOOKS_MD.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def gen_cli_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------- plugin_hooks.md


def test_hookspecs_are_found() -> None:
    assert len(spec_hooks()) >= 13


@pytest.mark.parametrize("hook", list(spec_hooks()))
def test_every_hook_is_documented_with_its_parameters(hook: str, plugin_hooks_md: str) -> None:
    expected = spec_hooks()[hook]
    sections = hook_sections(plugin_hooks_md)
    assert hook in sections, f"docs/plugin_hooks.md has no `## {hook}({', '.join(expected)})` section"
    params, body = sections[hook]
    assert params == expected, (
        f"docs/plugin_hooks.md documents `{hook}({', '.join(params)})`, the spec is `{hook}({', '.join(expected)})`"
    )
    for param in expected:
        assert re.search(rf"^- `{param}` —", body, re.M), f"`{hook}`: parameter `{param}` is not described"
    assert "```python" in body, f"`{hook}` has no example"


def test_no_heading_documents_a_missing_hook(plugin_hooks_md: str) -> None:
    unknown = sorted(set(hook_sections(plugin_hooks_md)) - set(spec_hooks()))
    assert not unknown, f"docs/plugin_hooks.md documents hooks that do not exist: {unknown}"


def test_hooks_are_documented_in_spec_order_under_the_spec_banners(plugin_hooks_md: str) -> None:
    source = inspect.getsource(hookspecs).splitlines()
    items = [(number, "banner", match["banner"]) for number, line in enumerate(source, 1)
             if (match := BANNER_IN_SPECS.match(line))]
    hook_lines = {name: getattr(hookspecs, name).__code__.co_firstlineno for name in spec_hooks()}
    items += [(number, "hook", name) for name, number in hook_lines.items()]
    expected = [(kind, name) for _, kind, name in sorted(items)]
    banners = {name for kind, name in expected if kind == "banner"}
    documented = []
    for line in outside_fences(plugin_hooks_md):
        if (match := HOOK_HEADING.match(line)) is not None:
            documented.append(("hook", match["name"]))
        elif line.startswith("# ") and line[2:].strip() in banners:
            documented.append(("banner", line[2:].strip()))
    assert documented == expected


# ------------------------------------------------------------------------------------------ cli.md


def test_cli_md_is_up_to_date(gen_cli_docs: ModuleType) -> None:
    current = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert current == gen_cli_docs.generate_cli_docs(), "docs/cli.md is stale; run `python scripts/gen_cli_docs.py`"


def test_cli_md_documents_every_command(gen_cli_docs: ModuleType) -> None:
    headings = {line[3:] for line in outside_fences((DOCS / "cli.md").read_text(encoding="utf-8"))
                if line.startswith("## provgen")}
    assert {"provgen", "provgen generate", "provgen verify", "provgen keys init", "provgen plugins list"} <= headings
    assert headings == {" ".join(("provgen", *path)) for path in gen_cli_docs.command_paths()}


def test_gen_cli_docs_check_and_write(gen_cli_docs: ModuleType, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "cli.md"
    monkeypatch.setattr(gen_cli_docs, "CLI_MD", target)
    assert gen_cli_docs.main(["--check"]) == 1 and not target.exists()  # missing counts as stale
    assert gen_cli_docs.main([]) == 0 and target.read_text(encoding="utf-8") == gen_cli_docs.generate_cli_docs()
    assert gen_cli_docs.main(["--check"]) == 0
    target.write_text(target.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert gen_cli_docs.main(["--check"]) == 1


# ------------------------------------------------------------------ provgen commands in the docs


def invocations(markdown: str) -> Iterator[tuple[int, list[str]]]:
    """``(block number, arguments after "provgen")`` for each provgen command in the fenced shell blocks.

    Handles ``$ `` prompts, ``VAR=value`` prefixes, ``|``/``&&``/``;`` and ``# comments``.
    """
    for number, (language, lines) in enumerate(fenced_blocks(markdown), 1):
        if language in NOT_SHELL:
            continue
        for line in lines:
            text = line.strip().removeprefix("$ ")
            if re.search(r"#.*\bplugin command\b", text):
                continue
            try:
                tokens = shlex.split(text, comments=True)
            except ValueError:  # unbalanced quotes: prose or output, not a command
                continue
            segment: list[str] = []
            for token in [*tokens, ";"]:
                if token not in SHELL_SEPARATORS:
                    segment.append(token)
                    continue
                while segment and ENV_ASSIGNMENT.match(segment[0]):
                    segment.pop(0)
                if segment and segment[0] == "provgen":
                    yield number, segment[1:]
                segment = []


def doc_files() -> list[Path]:
    return [path for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))] if path.is_file()]


def test_invocations_are_found_in_shell_blocks_only() -> None:
    markdown = (
        "```bash\n"
        "PROVGEN_PLUGINS=a provgen plugins list --json | jq .  # a comment\n"
        "$ provgen keys init && provgen verify out/*.png\n"
        "provgen: created development signing keys in ~/.provgen/keys\n"
        "provgen hello   # plugin command\n"
        "```\n"
        "```python\nprovgen generate\n```\n"
        "  ```text\n  Usage: provgen [OPTIONS] COMMAND\n    provgen verify x.png\n  ```\n"
    )
    assert list(invocations(markdown)) == [
        (1, ["plugins", "list", "--json"]), (1, ["keys", "init"]), (1, ["verify", "out/*.png"]),
        (3, ["verify", "x.png"]),
    ]


@pytest.mark.parametrize("path", doc_files(), ids=lambda path: path.name)
def test_documented_commands_exist(path: Path, gen_cli_docs: ModuleType) -> None:
    paths = set(gen_cli_docs.command_paths())
    groups = {path[:-1] for path in paths if path}
    problems = []
    for block, args in invocations(path.read_text(encoding="utf-8")):
        command: tuple[str, ...] = ()
        for word in args:
            if command not in groups or not COMMAND_WORD.match(word):
                break  # past the command path: arguments, options, or output that merely starts with provgen
            if (*command, word) not in paths:
                problems.append(f"block {block}: `provgen {' '.join((*command, word))}` is not a command")
                break
            command = (*command, word)
    assert not problems, f"{path.relative_to(ROOT)}: " + "; ".join(problems)
