"""Click options more than one command takes, defined once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: A file that must exist, given as a ``Path``.
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def file_option(flag: str, dest: str, help: str) -> Callable[[F], F]:
    """An optional ``--flag FILE`` (an existing file) passed as ``dest`` (None when absent)."""
    return click.option(flag, dest, type=EXISTING_FILE, default=None, help=help)


def policy_and_rules(policy_help: str, rules_help: str) -> Callable[[F], F]:
    """``--policy FILE`` and ``--rules FILE``: decide under these documents, in process."""

    def wrap(f: F) -> F:
        return file_option("--policy", "policy_file", policy_help)(
            file_option("--rules", "rules_file", rules_help)(f)
        )

    return wrap
