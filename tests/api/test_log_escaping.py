"""No value a client controls can end a log line or start a forged one, in either format."""

import json
import logging
import re

import pytest
from fastapi.testclient import TestClient

from config.log import JsonFormatter, TextFormatter, escape
from tests.helpers.capture import captured_records

FORGED = "2026-12-01 00:00:00,000 INFO tracker.access: request method=GET path=/ status=200"
# A record of the text format starts with its time; a forged one would too.
RECORD_START = re.compile(r"^\d{4}-\d{2}-\d{2} ")


def access_record(client: TestClient, path: str) -> logging.LogRecord:
    with captured_records("tracker.access") as records:
        client.get(path)
    [record] = records
    return record


@pytest.mark.parametrize("separator", ["%0A", "%0D", "%0D%0A", "%E2%80%A8", "%C2%85"])
def test_a_line_break_in_the_path_cannot_forge_a_text_line(
    client: TestClient, separator: str
) -> None:
    record = access_record(client, f"/jobs/1{separator}{FORGED.replace(' ', '%20')}")
    line = TextFormatter().format(record)
    assert line.splitlines() == [line]
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", line)
    assert line.count("status=") == 1 + FORGED.count("status=")
    # The forged text sits inside the quoted path, not as fields of their own.
    assert re.search(r' path="/jobs/1\\(n|r|u2028|u0085).*status=200" status=404 ', line)


def test_a_line_break_in_the_path_stays_inside_its_json_string(client: TestClient) -> None:
    record = access_record(client, "/jobs/1%0D%0A" + FORGED.replace(" ", "%20"))
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "\r" not in line
    assert json.loads(line)["path"] == "/jobs/1\r\n" + FORGED


def test_spaces_and_equals_signs_cannot_fake_a_field(client: TestClient) -> None:
    line = TextFormatter().format(access_record(client, "/x%20status=200%20request_id=forged"))
    assert ' path="/x status=200 request_id=forged" status=404 ' in line
    assert re.findall(r" request_id=(\S+)", line)[-1] != "forged"


def test_an_error_message_echoing_input_is_escaped() -> None:
    logger = logging.getLogger("tracker.test")
    record = logger.makeRecord(
        "tracker.test", logging.INFO, __file__, 1, "Integrity error: %s", (f"x\n{FORGED}",), None
    )
    for line in (TextFormatter().format(record), JsonFormatter().format(record)):
        assert line.splitlines() == [line]


def test_a_traceback_cannot_start_a_record_of_its_own() -> None:
    try:
        raise ValueError(f"bad input\n{FORGED}\rmore")
    except ValueError as error:
        record = logging.makeLogRecord(
            {
                "name": "tracker.error",
                "msg": "Unhandled error",
                "exc_info": (ValueError, error, None),
            }
        )
    first, *traceback = TextFormatter().format(record).splitlines()
    assert RECORD_START.match(first)
    assert traceback
    assert all(line.startswith("    ") and "\r" not in line for line in traceback)
    assert any(FORGED in line for line in traceback)


def test_escaping_keeps_readable_text_as_it_is() -> None:
    assert escape("/jobs/é 1") == "/jobs/é 1"
    assert escape("a\tb\x1b[31m") == "a\\tb\\u001b[31m"
