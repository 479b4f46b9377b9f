"""The worker's parts without a broker: real models, settings, the scoring handler behind the
coordinator on in-memory ports (tests/fakes.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fraudstream.app.serving import ServingManager
from fraudstream.core.messages import Routing
from fraudstream.settings import Settings

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
CHAMPION = "champion-v1"
CHALLENGER = "challenger-v2"
HAS_CHALLENGER = (MODELS / CHALLENGER / "metadata.json").is_file()
SALT = "agents-test"


def routing() -> Routing:
    if HAS_CHALLENGER:
        return Routing(
            champion=CHAMPION, challenger=CHALLENGER, challenger_share=0.5, shadow=True, salt=SALT
        )
    return Routing(champion=CHAMPION, salt=SALT)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        table_store="memory://",
        models_dir=MODELS,
        data_dir=tmp_path,
        partitions=2,
        feedback_grace_seconds=300.0,
    )


@pytest.fixture
def serving(settings: Settings) -> ServingManager:
    manager = ServingManager(settings.models_dir)
    manager.start_sync(routing())
    return manager


_DROP = object()


def tx_bytes(
    tid: str,
    card: str,
    *,
    amount: Any = 42.5,
    when: str = "2024-05-01T12:00:00+00:00",
    merchant: str = "m-1",
    **extra: Any,
) -> bytes:
    obj: dict[str, Any] = {
        "transaction_id": tid,
        "card_id": card,
        "merchant_id": merchant,
        "amount": amount,
        "currency": "EUR",
        "event_time": when,
        "mcc": 5411,
        "country": "FR",
        "channel": "ecom",
        "device_id": f"dev-{card}",
        "schema_version": 1,
    }
    obj.update(extra)
    return orjson.dumps({k: v for k, v in obj.items() if v is not _DROP})


DROP = _DROP
