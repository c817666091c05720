"""Built-in plugin: refuse prompts that contain a blocked word or phrase (``PROVGEN_BLOCKLIST``).

``PROVGEN_BLOCKLIST`` is either a comma-separated list (``"word, two words"``) or the path of a text file
with one entry per line (``#`` starts a comment; commas also separate). Matching ignores case and is by
whole words (``cat`` blocks "a cat" but not "concatenate"). Unset or empty: the plugin does nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from provgen.core.errors import ValidationError
from provgen.core.hookspecs import hookimpl
from provgen.core.policy import PolicyDecision

if TYPE_CHECKING:
    from provgen.core.request import GenerationRequest

PLUGIN_NAME = "blocklist"
ENV = "PROVGEN_BLOCKLIST"


def blocked_terms(value: str) -> list[str]:
    """The entries of a ``PROVGEN_BLOCKLIST`` value (a list, or a file's path), lower-cased, in order."""
    value = value.strip()
    if not value:
        return []
    path = Path(value).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValidationError(ENV, f"cannot read the blocklist file {str(path)!r}: {error}") from error
        lines = (line.split("#", 1)[0] for line in text.splitlines())
        raw = [term for line in lines for term in line.split(",")]
    elif os.sep in value or value.endswith(".txt"):
        raise ValidationError(ENV, f"{value!r} looks like a file path but is not a file; give the path of a "
                                   "text file (one entry per line) or comma-separated words")
    else:
        raw = value.split(",")
    return list(dict.fromkeys(" ".join(term.split()).lower() for term in raw if term.strip()))


def find_blocked(prompt: str, terms: list[str]) -> list[str]:
    """The terms that occur in ``prompt`` as whole words (case-insensitive, any run of spaces between words)."""
    text = " ".join(prompt.split()).lower()
    return [term for term in terms if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text)]


@hookimpl
def check_policy(request: GenerationRequest) -> PolicyDecision | None:
    terms = blocked_terms(os.environ.get(ENV, ""))
    if not terms:
        return None
    found = find_blocked(request.prompt, terms)
    if not found:
        return None
    return PolicyDecision(f"the prompt contains blocked term(s): {', '.join(found)} (blocklist {ENV})")
