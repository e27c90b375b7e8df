"""Reading the Embedded Metric Format lines the app writes, checked against the specification:
an `_aws` object with a millisecond `Timestamp` and `CloudWatchMetrics` directives, each naming
a `Namespace`, its dimension sets and its metrics (`Name`, `Unit`); every dimension a string
member of the root and every metric a number (or a list of at most 100) there."""

import json
import logging
from typing import Any

UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Count", "Percent", "None"}


def check_document(document: dict[str, Any]) -> None:
    metadata = document["_aws"]
    assert set(metadata) == {"Timestamp", "CloudWatchMetrics"}
    assert isinstance(metadata["Timestamp"], int)
    assert metadata["Timestamp"] > 1_600_000_000_000
    for directive in metadata["CloudWatchMetrics"]:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
        assert isinstance(directive["Namespace"], str)
        assert directive["Namespace"]
        for dimension_set in directive["Dimensions"]:
            assert 1 <= len(dimension_set) <= 30
            for name in dimension_set:
                assert isinstance(document[name], str), name
        assert 1 <= len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert set(metric) == {"Name", "Unit"}
            assert metric["Unit"] in UNITS
            value = document[metric["Name"]]
            values = value if isinstance(value, list) else [value]
            assert 1 <= len(values) <= 100
            assert all(isinstance(each, int | float) for each in values), metric


def metric_lines(output: str) -> list[dict[str, Any]]:
    """The EMF documents among the output's lines, each checked."""
    documents = []
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        if "_aws" in document:
            check_document(document)
            documents.append(document)
    return documents


def logged_metrics(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    """The EMF documents among the `tracker.metrics` records (see captured_records)."""
    return metric_lines("\n".join(record.getMessage() for record in records))
