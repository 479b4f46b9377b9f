"""fraudstream: real-time card-fraud scoring on Kafka."""

__version__ = "0.1.0"
