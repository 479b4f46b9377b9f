"""The real deployment tools the tests run (helm, promtool, prometheus), installed by `make tools`
(deploy/install-tools.sh) into the project's cache. Missing tools fail the test with what to do:
CI installs them, so a missing one is a broken install, never a reason to skip."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fraudstream.kafka.jvm import cache_root


def tool(name: str) -> Path:
    installed = cache_root() / "tools" / "bin" / name
    if installed.is_file():
        return installed
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    pytest.fail(
        f"{name} is not installed: run `make tools` (deploy/install-tools.sh puts it into "
        f"{installed.parent})",
        pytrace=False,
    )
