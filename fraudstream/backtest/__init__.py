"""``fraudstream backtest``: replay a labelled history through the worker's engine and measure.

``run`` replays (in process today; through Kafka with the live entity topology later),
``evaluate`` computes the metrics from the records a worker writes, ``output`` writes files and
the report, ``api`` ties them together, ``handbook`` is the Fraud Detection Handbook benchmark.
"""
