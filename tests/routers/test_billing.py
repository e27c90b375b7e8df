"""Billing: usage per customer and period, invoices, and their CSV forms."""

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Customer, JobConfiguration, Scope
from tests.helpers.factories import create_configuration, create_customer
from tests.helpers.scripts import PIPELINE, Script, admin_script, client_script, new_job, pipeline

COSTS = {tag: cost for tag, _, cost in PIPELINE}
POINTS = {tag: points for tag, points, _ in PIPELINE}
ZERO_TOTALS = {
    "jobs_started": 0,
    "jobs_completed": 0,
    "jobs_failed": 0,
    "steps_completed": 0,
    "points": 0,
    "cost": "0.0000",
}


@pytest.fixture
def admin(db: Session, client: TestClient) -> Script:
    return admin_script(db, client)


@pytest.fixture
def configuration(db: Session) -> JobConfiguration:
    return pipeline(db)


@pytest.fixture
def customer(db: Session) -> Customer:
    return create_customer(db)


def complete(script: Script, job: dict[str, Any], name: str, at: str, **extra: Any) -> None:
    response = script.event(job["id"], kind="step", name=name, occurred_at=at, **extra)
    assert response.status_code in (200, 201), response.text


def usage(script: Script, **params: Any) -> dict[str, Any]:
    response = script.get("/billing/usage", **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def invoice(script: Script, **params: Any) -> dict[str, Any]:
    response = script.get("/billing/invoice", **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def by_period(body: dict[str, Any], figure: str = "steps_completed") -> dict[str, Any]:
    return {row["period_start"]: row[figure] for row in body["rows"]}


def parse_csv(response: Any) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    return list(csv.reader(io.StringIO(response.text)))


# Periods ----------------------------------------------------------------------------------------


def test_a_step_is_billed_in_the_period_it_completed(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    job = new_job(admin, configuration, customer.id)
    complete(admin, job, "segment", "2026-01-31T23:59:59.999Z")
    complete(admin, job, "classify", "2026-02-01T00:00:00Z")

    months = usage(admin, **{"from": "2026-01-01", "to": "2026-03-01", "customer_id": customer.id})
    assert by_period(months, "cost") == {
        "2026-01-01T00:00:00Z": "1.5000",
        "2026-02-01T00:00:00Z": "2.2500",
    }
    days = usage(
        admin,
        **{"from": "2026-01-31", "to": "2026-02-02", "interval": "day", "customer_id": customer.id},
    )
    assert by_period(days) == {"2026-01-31T00:00:00Z": 1, "2026-02-01T00:00:00Z": 1}
    # The range is half-open: `to` itself is out.
    january = usage(admin, **{"from": "2026-01-01", "to": "2026-02-01", "customer_id": customer.id})
    assert january["totals"]["cost"] == "1.5000"
    assert january["totals"]["points"] == POINTS["segment"]


def test_periods_are_cut_in_the_requested_time_zone(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    job = new_job(admin, configuration, customer.id)
    # 12:30 UTC on 10 March is 01:30 on 11 March in Auckland (UTC+13 in summer).
    complete(admin, job, "upload", "2026-03-10T12:30:00Z")
    params = {"interval": "day", "customer_id": customer.id}

    utc = usage(admin, **{"from": "2026-03-09", "to": "2026-03-13", **params})
    assert by_period(utc) == {"2026-03-10T00:00:00Z": 1}
    auckland = usage(
        admin, **{"from": "2026-03-09", "to": "2026-03-13", "tz": "Pacific/Auckland", **params}
    )
    assert by_period(auckland) == {"2026-03-11T00:00:00+13:00": 1}
    assert (auckland["from"], auckland["to"]) == (
        "2026-03-09T00:00:00+13:00",
        "2026-03-13T00:00:00+13:00",
    )
    # A date bound is midnight in the zone: 11 March in Auckland starts at 11:00 UTC on the 10th.
    before_it = usage(
        admin, **{"from": "2026-03-09", "to": "2026-03-11", "tz": "Pacific/Auckland", **params}
    )
    assert before_it["rows"] == []


def test_an_offset_whose_plus_was_not_url_encoded_is_still_read(admin: Script) -> None:
    # In a query string "+" means a space: curl users often send "+13:00" as it is.
    response = admin.client.get(
        "/billing/usage?from=2026-03-09T00:00:00+13:00&to=2026-03-10T00:00:00+13:00",
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["from"] == "2026-03-08T11:00:00Z"


def test_months_in_a_zone_follow_its_daylight_saving_offsets(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    job = new_job(admin, configuration, customer.id)
    complete(admin, job, "upload", "2026-03-31T22:30:00Z")  # 1 April 00:30 in Paris (UTC+2)
    complete(admin, job, "segment", "2026-02-28T23:30:00Z")  # 1 March 00:30 in Paris (UTC+1)
    body = usage(
        admin,
        **{"from": "2026-01-01", "to": "2026-05-01", "tz": "Europe/Paris"},
        customer_id=customer.id,
    )
    assert by_period(body) == {"2026-03-01T00:00:00+01:00": 1, "2026-04-01T00:00:00+02:00": 1}


def test_weeks_start_on_monday(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    job = new_job(admin, configuration, customer.id)
    complete(admin, job, "upload", "2026-01-04T23:00:00Z")  # a Sunday
    complete(admin, job, "segment", "2026-01-05T00:00:00Z")  # the next Monday
    complete(admin, job, "classify", "2026-01-11T23:59:59Z")  # that week's Sunday
    body = usage(
        admin,
        **{
            "from": "2026-01-01",
            "to": "2026-02-01",
            "interval": "week",
            "customer_id": customer.id,
        },
    )
    assert by_period(body) == {"2025-12-29T00:00:00Z": 1, "2026-01-05T00:00:00Z": 2}
    assert datetime.fromisoformat(body["rows"][1]["period_start"]).weekday() == 0


def test_a_customer_with_no_jobs_has_no_rows_and_zero_totals(
    admin: Script, customer: Customer
) -> None:
    body = usage(admin, **{"from": "2026-01-01", "to": "2027-01-01", "customer_id": customer.id})
    assert body["rows"] == []
    assert body["totals"] == ZERO_TOTALS


def test_empty_periods_are_left_out(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    job = new_job(admin, configuration, customer.id)
    complete(admin, job, "upload", "2026-01-15T10:00:00Z")
    complete(admin, job, "segment", "2026-04-15T10:00:00Z")
    body = usage(admin, **{"from": "2026-01-01", "to": "2026-06-01", "customer_id": customer.id})
    assert list(by_period(body)) == ["2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z"]


# The figures ------------------------------------------------------------------------------------


def test_job_figures_count_starts_completions_and_failures(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    finished = new_job(admin, configuration, customer.id)
    for tag, _, _ in PIPELINE:
        complete(admin, finished, tag, "2026-02-10T08:00:00Z")
    failed = new_job(admin, configuration, customer.id)
    complete(admin, failed, "upload", "2026-02-11T08:00:00Z")
    assert admin.event(failed["id"], kind="error", name="segment").status_code == 201
    new_job(admin, configuration, customer.id)  # started, nothing done

    # Jobs are created, and fail, at the server's time: now.
    now = datetime.now(UTC)
    body = usage(
        admin,
        **{"from": "2026-01-01T00:00:00Z", "to": now.replace(year=now.year + 1).isoformat()},
        customer_id=customer.id,
    )
    assert body["totals"] == {
        "jobs_started": 3,
        "jobs_completed": 1,
        "jobs_failed": 1,
        "steps_completed": 5,
        "points": 10 + POINTS["upload"],
        "cost": str(sum(COSTS.values()) + COSTS["upload"]),
    }
    february = {row["period_start"]: row for row in body["rows"]}["2026-02-01T00:00:00Z"]
    assert february["jobs_completed"] == 1  # when its last step completed
    assert february["customer_name"] == customer.name


def test_tag_filters_by_configuration_of_any_version(
    db: Session, admin: Script, customer: Customer
) -> None:
    first = create_configuration(db, tag="ocr", steps=[("scan", 1, Decimal("1.0000"))])
    second = create_configuration(db, tag="ocr", steps=[("scan", 1, Decimal("2.0000"))])
    other = create_configuration(db, steps=[("scan", 1, Decimal("4.0000"))])
    for configuration in (first, second, other):
        job = new_job(admin, configuration, customer.id, version=configuration.version)
        complete(admin, job, "scan", "2026-05-05T00:00:00Z")
    params = {"from": "2026-05-01", "to": "2026-06-01", "customer_id": customer.id}
    assert usage(admin, **params, tag="ocr")["totals"]["cost"] == "3.0000"
    assert usage(admin, **params)["totals"]["cost"] == "7.0000"
    assert usage(admin, **params, tag="nothing")["rows"] == []


def test_rows_are_ordered_by_period_then_customer(
    db: Session, admin: Script, configuration: JobConfiguration
) -> None:
    customers = [create_customer(db), create_customer(db)]
    for at in ("2026-02-03T00:00:00Z", "2026-01-03T00:00:00Z"):
        for customer in reversed(customers):
            complete(admin, new_job(admin, configuration, customer.id), "upload", at)
    body = usage(admin, **{"from": "2026-01-01", "to": "2026-03-01"})
    ours = [
        (row["period_start"][:7], row["customer_id"])
        for row in body["rows"]
        if row["customer_id"] in {customer.id for customer in customers}
    ]
    first, second = sorted(customer.id for customer in customers)
    assert ours == [
        ("2026-01", first),
        ("2026-01", second),
        ("2026-02", first),
        ("2026-02", second),
    ]


def test_a_step_is_billed_once_at_its_earliest_completion(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    job = new_job(admin, configuration, customer.id)
    complete(admin, job, "segment", "2026-02-01T00:00:00Z")
    complete(admin, job, "segment", "2026-01-31T23:00:00Z")  # arrived late, happened first
    complete(admin, job, "segment", "2026-02-02T00:00:00Z")
    body = usage(admin, **{"from": "2026-01-01", "to": "2026-03-01", "customer_id": customer.id})
    assert by_period(body, "cost") == {"2026-01-01T00:00:00Z": COSTS["segment"].to_eng_string()}


def test_replayed_event_ids_change_no_figure(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    job = new_job(admin, configuration, customer.id)
    complete(admin, job, "upload", "2026-01-31T23:00:00Z", event_id="upload-1")
    params = {"from": "2026-01-01", "to": "2026-03-01", "customer_id": customer.id}
    before = usage(admin, **params), invoice(admin, customer_id=customer.id, period="2026-01")
    for at in ("2026-01-31T23:00:00Z", "2026-01-01T00:00:00Z", "2026-02-15T00:00:00Z"):
        complete(admin, job, "upload", at, event_id="upload-1")
    assert (usage(admin, **params), invoice(admin, customer_id=customer.id, period="2026-01")) == (
        before
    )
    assert before[1]["total"] == "0.1000"


# Bad requests and access ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2026-02-01", "to": "2026-01-01"}, "'from' must be before 'to'"),
        ({"from": "2026-01-01", "to": "2026-01-01"}, "'from' must be before 'to'"),
        ({"from": "2025-01-01", "to": "2026-02-06", "interval": "day"}, "at most 400 periods"),
        ({"from": "2020-01-01", "to": "2025-01-02", "interval": "month"}, "at most 5 years"),
        ({"from": "2026-01-01", "to": "2026-02-01", "tz": "Mars/Olympus_Mons"}, "time zone"),
        ({"from": "2026-01-01", "to": "2026-02-01", "tz": "../etc/passwd"}, "time zone"),
        ({"from": "2026-01-01T00:00:00", "to": "2026-02-01"}, "timezone"),
        ({"from": "20260101", "to": "2026-02-01"}, "date"),
        ({"from": "2026-01-01", "to": "2026-02-01", "interval": "year"}, "interval"),
        ({"to": "2026-02-01"}, "from"),
        ({"from": "1969-12-01", "to": "1970-01-02"}, "years 1970 to 9998"),
    ],
)
def test_bad_usage_requests_are_422_saying_why(
    admin: Script, params: dict[str, Any], message: str
) -> None:
    response = admin.get("/billing/usage", **params)
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


def test_the_longest_ranges_allowed_are_accepted(admin: Script) -> None:
    assert usage(admin, **{"from": "2025-01-01", "to": "2026-02-05", "interval": "day"})
    assert usage(admin, **{"from": "2020-01-01", "to": "2025-01-01", "interval": "week"})


def test_an_unknown_customer_is_404(admin: Script) -> None:
    for path, params in (
        ("/billing/usage", {"from": "2026-01-01", "to": "2026-02-01"}),
        ("/billing/invoice", {"period": "2026-01"}),
    ):
        response = admin.get(path, **params, customer_id=999_999_999)
        assert response.status_code == 404
        assert response.json()["detail"] == "Customer 999999999 not found"


def test_a_client_sees_its_own_customer_only(
    db: Session,
    client: TestClient,
    admin: Script,
    configuration: JobConfiguration,
    customer: Customer,
) -> None:
    other = create_customer(db)
    for owner in (customer, other):
        complete(admin, new_job(admin, configuration, owner.id), "report", "2026-01-10T00:00:00Z")
    mine = client_script(db, client, customer)
    params = {"from": "2026-01-01", "to": "2026-02-01"}

    body = usage(mine, **params)
    assert [row["customer_id"] for row in body["rows"]] == [customer.id]
    assert body["customer_id"] == customer.id
    assert usage(mine, **params, customer_id=customer.id) == body
    assert invoice(mine, period="2026-01")["customer_id"] == customer.id
    for path, extra in (("/billing/usage", params), ("/billing/invoice", {"period": "2026-01"})):
        response = mine.get(path, **extra, customer_id=other.id)
        assert response.status_code == 404
        assert response.json()["detail"] == f"Customer {other.id} not found"


def test_an_ingest_only_key_cannot_read_billing(db: Session, client: TestClient) -> None:
    writer = admin_script(db, client, scopes=(Scope.INGEST,))
    for path, params in (
        ("/billing/usage", {"from": "2026-01-01", "to": "2026-02-01"}),
        ("/billing/invoice", {"period": "2026-01", "customer_id": 1}),
    ):
        response = writer.get(path, **params)
        assert response.status_code == 403
        assert "read" in response.json()["detail"]


def test_billing_needs_authentication(client: TestClient) -> None:
    response = client.get("/billing/usage", params={"from": "2026-01-01", "to": "2026-02-01"})
    assert response.status_code == 401


# Invoices ---------------------------------------------------------------------------------------


def test_an_invoice_has_one_line_per_configuration_version_and_step(
    db: Session, admin: Script, customer: Customer
) -> None:
    first = create_configuration(
        db, tag="ocr", steps=[("scan", 1, Decimal("0.1000")), ("read", 2, Decimal("0.0333"))]
    )
    second = create_configuration(
        db, tag="ocr", steps=[("read", 2, Decimal("0.0500")), ("scan", 1, Decimal("0.1000"))]
    )
    alpha = create_configuration(db, tag="alpha", steps=[("only", 1, Decimal("10.0000"))])
    for _ in range(3):
        job = new_job(admin, first, customer.id, version=1)
        complete(admin, job, "scan", "2026-06-01T00:00:00Z")
        complete(admin, job, "read", "2026-06-30T23:59:59Z")
        complete(admin, job, "read", "2026-06-15T00:00:00Z")  # a repeat is billed once
    job = new_job(admin, second, customer.id)
    complete(admin, job, "read", "2026-06-10T00:00:00Z")
    complete(admin, job, "scan", "2026-07-01T00:00:00Z")  # next month
    complete(admin, new_job(admin, alpha, customer.id), "only", "2026-05-31T23:59:59Z")

    body = invoice(admin, customer_id=customer.id, period="2026-06")
    lines = [
        (
            line["tag"],
            line["version"],
            line["step_position"],
            line["step_tag"],
            line["quantity"],
            line["unit_cost"],
            line["amount"],
        )
        for line in body["lines"]
    ]
    assert lines == [
        ("ocr", 1, 0, "scan", 3, "0.1000", "0.3000"),
        ("ocr", 1, 1, "read", 3, "0.0333", "0.0999"),
        ("ocr", 2, 0, "read", 1, "0.0500", "0.0500"),
    ]
    assert body["total"] == "0.4499"
    assert body["lines"][0]["step_name"] == "scan"
    assert body["lines"][0]["configuration_name"] == first.name
    assert (body["customer_id"], body["customer_name"]) == (customer.id, customer.name)
    assert (body["period"], body["period_start"], body["period_end"]) == (
        "2026-06",
        "2026-06-01T00:00:00Z",
        "2026-07-01T00:00:00Z",
    )
    may = invoice(admin, customer_id=customer.id, period="2026-05")
    assert [line["tag"] for line in may["lines"]] == ["alpha"]
    assert may["total"] == "10.0000"


def test_the_invoice_total_is_the_usage_cost_of_its_month(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    times = ["2026-02-28T10:59:59Z", "2026-02-28T11:00:00Z", "2026-03-31T10:59:59Z"]
    for at in times:  # March in Auckland: 28 Feb 11:00 UTC to 31 Mar 11:00 UTC (UTC+13)
        job = new_job(admin, configuration, customer.id)
        for tag, _, _ in PIPELINE:
            complete(admin, job, tag, at)
    for tz in ("UTC", "Pacific/Auckland"):
        bill = invoice(admin, customer_id=customer.id, period="2026-03", tz=tz)
        month = usage(
            admin,
            **{"from": "2026-03-01", "to": "2026-04-01", "customer_id": customer.id, "tz": tz},
        )
        assert bill["total"] == month["totals"]["cost"]
    per_job = sum(COSTS.values())
    auckland = invoice(admin, customer_id=customer.id, period="2026-03", tz="Pacific/Auckland")
    assert Decimal(auckland["total"]) == 2 * per_job
    utc = invoice(admin, customer_id=customer.id, period="2026-03")
    assert Decimal(utc["total"]) == per_job
    assert auckland["period_start"] == "2026-03-01T00:00:00+13:00"


def test_an_empty_invoice_has_no_lines_and_a_zero_total(admin: Script, customer: Customer) -> None:
    body = invoice(admin, customer_id=customer.id, period="2026-01")
    assert (body["lines"], body["total"]) == ([], "0.0000")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"period": "2026-01"}, "customer_id is required"),
        ({"period": "2026-13", "customer_id": 1}, "period"),
        ({"period": "2026-1", "customer_id": 1}, "period"),
        ({"customer_id": 1}, "period"),
        ({"period": "0000-01", "customer_id": 1}, "years 1970 to 9998"),
        ({"period": "2026-01", "customer_id": 1, "tz": "Nowhere"}, "time zone"),
    ],
)
def test_bad_invoice_requests_are_422(admin: Script, params: dict[str, Any], message: str) -> None:
    response = admin.get("/billing/invoice", **params)
    assert response.status_code == 422, response.text
    assert message in str(response.json()["detail"])


# CSV --------------------------------------------------------------------------------------------


def test_usage_as_csv_by_accept_header_or_format(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    job = new_job(admin, configuration, customer.id)
    complete(admin, job, "upload", "2026-01-05T00:00:00Z")
    complete(admin, job, "segment", "2026-02-05T00:00:00Z")
    params: dict[str, Any] = {"from": "2026-01-01", "to": "2026-03-01", "customer_id": customer.id}

    by_header = admin.client.get(
        "/billing/usage", params=params, headers={**admin.headers, "Accept": "text/csv"}
    )
    by_format = admin.get("/billing/usage", **params, format="csv")
    assert by_header.text == by_format.text
    header, *rows = parse_csv(by_format)
    assert header == [
        "period_start",
        "customer_id",
        "customer_name",
        "jobs_started",
        "jobs_completed",
        "jobs_failed",
        "steps_completed",
        "points",
        "cost",
    ]
    assert rows == [
        [
            "2026-01-01T00:00:00Z",
            str(customer.id),
            customer.name,
            "0",
            "0",
            "0",
            "1",
            "1",
            "0.1000",
        ],
        [
            "2026-02-01T00:00:00Z",
            str(customer.id),
            customer.name,
            "0",
            "0",
            "0",
            "1",
            "2",
            "1.5000",
        ],
    ]
    assert (
        'filename="usage-20260101-20260301-month.csv"' in by_format.headers["content-disposition"]
    )


def test_json_stays_the_default_and_format_wins_over_accept(admin: Script) -> None:
    params = {"from": "2026-01-01", "to": "2026-02-01"}
    for headers, extra in (
        ({}, {}),
        ({"Accept": "*/*"}, {}),
        ({"Accept": "application/json, text/csv;q=0.5"}, {}),
        ({"Accept": "text/csv"}, {"format": "json"}),
    ):
        response = admin.client.get(
            "/billing/usage", params={**params, **extra}, headers={**admin.headers, **headers}
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
    assert parse_csv(admin.get("/billing/usage", **params, format="csv"))[1:] == []


def test_an_invoice_as_csv(
    admin: Script, configuration: JobConfiguration, customer: Customer
) -> None:
    for _ in range(2):
        complete(admin, new_job(admin, configuration, customer.id), "report", "2026-01-02T00:00Z")
    response = admin.client.get(
        "/billing/invoice",
        params={"customer_id": customer.id, "period": "2026-01"},
        headers={**admin.headers, "Accept": "text/csv"},
    )
    header, *rows = parse_csv(response)
    assert header == [
        "tag",
        "version",
        "configuration_name",
        "step_position",
        "step_tag",
        "step_name",
        "quantity",
        "unit_cost",
        "amount",
    ]
    assert rows == [
        [
            configuration.tag,
            "1",
            configuration.name,
            "3",
            "report",
            "report",
            "2",
            "2.2501",
            "4.5002",
        ]
    ]
    assert (
        f'filename="invoice-{customer.id}-2026-01.csv"' in response.headers["content-disposition"]
    )


def test_openapi_documents_json_and_csv(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/billing/usage", "/billing/invoice"):
        content = paths[path]["get"]["responses"]["200"]["content"]
        assert {"application/json", "text/csv"} <= set(content)


def test_csv_cells_never_start_a_spreadsheet_formula(
    db: Session, admin: Script, configuration: JobConfiguration
) -> None:
    customer = create_customer(db, name='=HYPERLINK("http://evil.example","x")')
    job = new_job(admin, configuration, customer.id)
    complete(admin, job, "upload", "2026-01-05T00:00:00Z")
    _, row = parse_csv(
        admin.get(
            "/billing/usage",
            **{"from": "2026-01-01", "to": "2026-02-01", "customer_id": customer.id},
            format="csv",
        )
    )
    assert row[2] == "'" + customer.name
    assert (
        admin.get("/billing/usage", **{"from": "2026-01-01", "to": "2026-02-01"}).json()["rows"][0][
            "customer_name"
        ]
        == customer.name
    )
