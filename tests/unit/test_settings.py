from __future__ import annotations

import pytest
from pydantic import ValidationError

from fraudstream.settings import Settings, companion_roles


def test_companion_runs_the_roles_the_workers_leave_out() -> None:
    assert companion_roles("score") == "join,aggregate"
    assert companion_roles("score,aggregate") == "join"
    assert companion_roles(" score , join ") == "aggregate"
    assert companion_roles("score,join,aggregate") is None


def test_roles_are_a_set_of_known_names() -> None:
    s = Settings(_env_file=None, roles=" join , aggregate ")  # type: ignore[call-arg]
    assert s.role_set == {"join", "aggregate"}
    with pytest.raises(ValidationError):
        Settings(_env_file=None, roles="score,sing")  # type: ignore[call-arg]
