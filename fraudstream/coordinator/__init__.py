"""Exactly-once per input partition, independent of Faust and Kafka: the ``Coordinator``, its
per-partition state (``PartitionState``) and the protocols it depends on (``ports``)."""
