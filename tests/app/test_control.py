"""The control follower's handling of policy and rules records: newer versions are applied on the
loop, the topic's past (read again from its start) is skipped, invalid records leave the one in
force."""

from __future__ import annotations

import asyncio
from typing import Any

from fraudstream.app.control import ControlFollower
from fraudstream.app.serving import ServingManager
from fraudstream.core.policy import ModelPolicy, Policy, Thresholds, encode_policy
from fraudstream.core.rules import AmountRule, RuleSet, encode_rules
from fraudstream.kafka.control import POLICY_KEY, RULES_KEY
from fraudstream.settings import Settings


class Msg:
    def __init__(self, key: bytes, value: bytes) -> None:
        self._key, self._value = key, value

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def offset(self) -> int:
        return 7


def policy(version: int, review: float = 0.1) -> Policy:
    return Policy(version, {"*": ModelPolicy(default=Thresholds(review, 0.9))})


def test_newer_versions_apply_and_the_past_is_skipped(
    settings: Settings, serving: ServingManager
) -> None:
    follower = ControlFollower(settings, serving)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def feed(*msgs: Any) -> None:
            for m in msgs:
                follower._versioned(loop, m)  # noqa: SLF001 - the unit under test
            await asyncio.sleep(0)  # the call_soon_threadsafe callbacks run

        await feed(Msg(POLICY_KEY, encode_policy(policy(2))))
        assert serving.current is not None
        assert serving.current.policy.version == 2
        await feed(Msg(POLICY_KEY, encode_policy(policy(1))))  # the past, read again
        assert serving.current.policy.version == 2
        await feed(Msg(POLICY_KEY, encode_policy(policy(2, review=0.2))))  # same version, changed
        assert serving.current.policy == policy(2, review=0.2)
        await feed(
            Msg(POLICY_KEY, b'{"version": 3, "models": {"*": {"review": 0.9, "decline": 0.1}}}')
        )
        assert serving.current.policy == policy(2, review=0.2)  # invalid: the one in force stays
        rules = RuleSet(1, (AmountRule("big", 100.0),))
        await feed(Msg(RULES_KEY, encode_rules(rules)))
        assert serving.current.rules == rules
        assert serving.current.policy == policy(2, review=0.2)

    asyncio.run(main())
    assert follower.applied == 3
