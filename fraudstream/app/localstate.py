"""Reset-safe local state: the worker's local table files must belong to the cluster it talks to.

Faust keeps its tables (the feedback join's records, per-version counts, held labels) in RocksDB
under ``FRAUD_DATA_DIR/<app id>`` and remembers, per table partition, the changelog offset it has
applied. Against a cluster that was reset (a development broker formatted anew, topics deleted
and created again), those offsets are "ahead" of the changelog and Faust refuses to start
(``ConsistencyError``); against another cluster with a longer changelog it would silently mix
two clusters' state. Everything in that folder can be rebuilt from the changelogs, so before
Faust opens it the worker checks it and, when it does not match, says so in one line, discards
it and lets Faust restore from Kafka.

The folder is stamped with the cluster id and the changelog topics' ids (``cluster.json``); a
stamp that differs, or a table partition whose applied offset is past its changelog's end, means
the local copy is not this cluster's.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException, TopicCollection, TopicPartition

from fraudstream.errors import BrokerError
from fraudstream.kafka.admin import JOIN_TABLES, admin_client, changelog_topic
from fraudstream.kafka.clients import make_consumer
from fraudstream.settings import Settings

log = logging.getLogger("fraudstream.localstate")

STAMP = "cluster.json"
# Faust's RocksDB store keeps the applied changelog offset of a partition under this key.
_OFFSET_KEY = b"__faust\x00offset__"
_DB_NAME = re.compile(r"^(?P<table>.+)-(?P<partition>\d+)\.db$")


@dataclass(frozen=True)
class ClusterIdentity:
    cluster_id: str
    topic_ids: dict[str, str]  # changelog topic -> its topic id (new when a topic is recreated)

    def to_json(self) -> str:
        return json.dumps({"cluster_id": self.cluster_id, "topic_ids": self.topic_ids}, indent=1)

    @classmethod
    def read(cls, path: Path) -> ClusterIdentity | None:
        try:
            obj = json.loads(path.read_text())
            return cls(
                str(obj["cluster_id"]), {str(k): str(v) for k, v in obj["topic_ids"].items()}
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


def state_dir(settings: Settings) -> Path:
    """The folder Faust keeps this app's local tables in (``datadir`` of the Faust app)."""
    return settings.data_dir / settings.app_id


def current_identity(settings: Settings) -> ClusterIdentity:
    admin = admin_client(settings)
    topics = [changelog_topic(settings, t) for t in JOIN_TABLES]
    try:
        md = admin.list_topics(timeout=10)
        futures = admin.describe_topics(TopicCollection([t for t in topics if t in md.topics]))
        ids = {name: str(fut.result(10).topic_id) for name, fut in futures.items()}
    except KafkaException as exc:
        raise BrokerError(
            f"cannot read the cluster's identity ({exc}); check that the broker is reachable"
        ) from exc
    return ClusterIdentity(str(md.cluster_id), ids)


def mismatch(stamp: ClusterIdentity | None, now: ClusterIdentity) -> str | None:
    """Why a folder stamped ``stamp`` is not this cluster's, or None when it is."""
    if stamp is None:
        return None
    if stamp.cluster_id != now.cluster_id:
        return f"they were written for Kafka cluster {stamp.cluster_id}, this is {now.cluster_id}"
    for topic, tid in stamp.topic_ids.items():
        if now.topic_ids.get(topic, tid) != tid:
            return f"changelog {topic} was deleted and created again since they were written"
    return None


def applied_offsets(folder: Path, app_id: str) -> dict[tuple[str, int], int]:
    """(changelog topic, partition) -> the offset Faust recorded as applied, from the RocksDB
    files under ``folder`` (opened read-only; the worker has not opened them yet)."""
    from rocksdict import AccessType, Options, Rdict

    out: dict[tuple[str, int], int] = {}
    for db in sorted(folder.rglob("*.db")):
        match = _DB_NAME.match(db.name)
        if not match or not db.is_dir():
            continue
        table, partition = match["table"], int(match["partition"])
        try:
            rd = Rdict(str(db), options=Options(raw_mode=True), access_type=AccessType.read_only())
        except Exception as exc:
            raise _Unreadable(f"{db.name} cannot be opened ({exc})") from exc
        try:
            raw = rd.get(_OFFSET_KEY)
        finally:
            rd.close()
        if raw is not None:
            out[(f"{app_id}-{table}-changelog", partition)] = int(raw)
    return out


class _Unreadable(Exception):
    pass


def ahead_of_changelog(settings: Settings, applied: dict[tuple[str, int], int]) -> str | None:
    """The first table partition whose applied offset is past its changelog's last offset."""
    if not applied:
        return None
    consumer = make_consumer(settings, group_id=f"{settings.app_id}-localstate")
    try:
        md = consumer.list_topics(timeout=10)
        for (topic, partition), offset in sorted(applied.items()):
            if topic not in md.topics or partition not in md.topics[topic].partitions:
                return f"changelog {topic} [{partition}] does not exist on this cluster"
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )
            if offset > high - 1:
                return (
                    f"{topic} [{partition}] was applied up to offset {offset}, but the changelog "
                    f"ends at {high - 1}"
                )
    except KafkaException as exc:
        raise BrokerError(f"cannot read changelog offsets ({exc}); is the broker up?") from exc
    finally:
        consumer.close()
    return None


def ensure_local_state_matches(settings: Settings) -> str | None:
    """Discard the local table folder when it is not this cluster's; stamp it. Returns the
    reason it was discarded, or None. Call after the topics exist and before Faust starts."""
    folder = state_dir(settings)
    now = current_identity(settings)
    reason: str | None = None
    if folder.exists():
        reason = mismatch(ClusterIdentity.read(folder / STAMP), now)
        if reason is None:
            try:
                reason = ahead_of_changelog(settings, applied_offsets(folder, settings.app_id))
            except _Unreadable as exc:
                reason = str(exc)
    if reason is not None:
        log.warning(
            "local tables in %s do not belong to this Kafka cluster (%s): discarding them and "
            "restoring from the changelogs",
            folder,
            reason,
        )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAMP).write_text(now.to_json())
    return reason
