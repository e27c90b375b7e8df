"""`trackerapi`: report jobs from shell pipelines. Exit 0 on success, 1 when the API refused, 2 on
usage errors. Every command ends within --timeout; an event the API could not take in time
waits in the spool for the next `trackerapi flush` (with --strict: exit 1 instead)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from trackerapi.client import Tracker
from trackerapi.core import config_schema
from trackerapi.errors import ApiError, ConfigurationError, TrackerUnavailable
from trackerapi.models import Event
from trackerapi.transport import RetryPolicy

REFUSED, USAGE = 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trackerapi", description=__doc__)
    parser.add_argument("--url", help="the API (default: TRACKER_URL)")
    parser.add_argument("--api-key", help="default: TRACKER_API_KEY")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds in all (default 30)")
    parser.add_argument("--spool", help="the spool file (default: TRACKER_SPOOL, else the cache)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the API is unreachable")
    commands = parser.add_subparsers(dest="command", required=True)

    job = commands.add_parser("job", help="jobs").add_subparsers(dest="action", required=True)
    start = job.add_parser("start", help="create a job (or find it: the create is idempotent)")
    start.add_argument("job_id", help="your id for the job (provider_job_id)")
    start.add_argument("--tag", required=True, help="the job configuration's tag")
    start.add_argument("--customer", type=int, help="the customer's id (administrators)")
    start.add_argument("--metadata", type=_json_object, help="a JSON object")

    for name, help_text in (("step", "a step finished"), ("error", "something failed"),
                            ("info", "a note")):  # fmt: skip
        command = commands.add_parser(name, help=help_text)
        command.add_argument("job_id", help="the job's provider_job_id")
        if name == "step":
            command.add_argument("tag", help="the step's tag")
        else:
            command.add_argument("message")
        if name == "error":
            command.add_argument("--step", help="the step that failed")
        command.add_argument("--metadata", type=_json_object, help="a JSON object")
        command.add_argument("--event-id", help="your idempotency key (default: a new one)")

    configs = commands.add_parser("configs", help="job configurations")
    config_actions = configs.add_subparsers(dest="action", required=True)
    push = config_actions.add_parser(
        "push", help="create or version a file's configurations (an admin's key, `configure` scope)"
    )
    push.add_argument("file", help="JSON, or YAML when it ends .yaml/.yml")
    config_actions.add_parser("schema", help="print the file format's JSON Schema")

    flush = commands.add_parser("flush", help="send what waits in the spool for this API key")
    flush.add_argument(
        "--adopt-legacy",
        action="store_true",
        help="also send, with this key, what an older client spooled without recording its key",
    )
    return parser


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("a JSON object is expected")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "configs" and args.action == "schema":
        print(json.dumps(config_schema(), indent=2))
        return 0
    # The whole command, retries included, ends within --timeout.
    retry = RetryPolicy(deadline=args.timeout)
    try:
        tracker = Tracker(
            args.api_key, args.url, mode="sync", timeout=min(10.0, args.timeout), retry=retry,
            spool=args.spool, strict=args.strict, exit_timeout=args.timeout,
        )  # fmt: skip
    except ConfigurationError as error:
        return _fail(str(error), USAGE)
    try:
        return _run(tracker, args)
    except ConfigurationError as error:
        return _fail(str(error), USAGE)
    except ApiError as error:
        return _fail(str(error), REFUSED)
    except TrackerUnavailable as error:
        return _fail(f"the API is unreachable: {error}", REFUSED)
    finally:
        tracker.close(timeout=0)


def _run(tracker: Tracker, args: argparse.Namespace) -> int:
    if not tracker.api_key:
        return _fail("no API key: set TRACKER_API_KEY or pass --api-key", USAGE)
    if args.command == "job":
        job = tracker.job(args.job_id, tag=args.tag, customer_id=args.customer,
                          metadata=args.metadata)  # fmt: skip
        if job.state is None:
            _note(f"the API is unreachable: job {args.job_id} is spooled")
        else:
            print(job.state.model_dump_json())
        return 0
    if args.command in {"step", "error", "info"}:
        return _event(tracker, args)
    if args.command == "configs":
        for outcome in tracker.configs.push(args.file):
            print(f"{outcome.tag} v{outcome.version}: {outcome.result}")
        return 0
    return _flush(tracker, adopt_legacy=args.adopt_legacy, timeout=args.timeout)


def _flush(tracker: Tracker, *, adopt_legacy: bool, timeout: float) -> int:
    """Send this key's entries; say what else waits (other keys', other APIs', legacy ones)."""
    spool, key = tracker.spool, tracker._courier.key
    if spool is not None and adopt_legacy:
        spool.adopt_legacy(tracker.base_url, key)
    delivered = tracker.flush(timeout=timeout)
    if spool is None:
        print("spool empty")
        return 0
    left = spool.count(tracker.base_url, key)
    print("spool empty" if delivered else f"{left} entries still wait in the spool")
    legacy = spool.count_legacy(tracker.base_url)
    others = spool.count() - left - legacy
    if others:
        _note(f"{others} entries of other API keys (or other APIs) wait in {spool.path}")
    if legacy:
        _note(
            f"{legacy} entries spooled by an older client, which recorded no key, wait in "
            f"{spool.path}: `trackerapi flush --adopt-legacy` sends them with this key"
        )
    return 0


def _event(tracker: Tracker, args: argparse.Namespace) -> int:
    rejected: list[str] = []
    tracker._courier.on_error = lambda rejection: rejected.append(rejection.reason)
    job = tracker.job_handle(args.job_id)
    kind = args.command
    options: dict[str, Any] = {"metadata": args.metadata, "event_id": args.event_id}
    event: Event
    if kind == "step":
        event = job.step(args.tag, **options)
    elif kind == "error":
        event = job.error(args.message, step=args.step, **options)
    else:
        event = job.info(args.message, **options)
    if rejected:
        return _fail(f"{kind} refused: {rejected[0]}", REFUSED)
    if tracker.spool is not None and tracker._courier.pending():
        _note(f"the API is unreachable: event {event.event_id} is spooled")
    else:
        print(event.event_id)
    return 0


def _note(message: str) -> None:
    print(f"trackerapi: {message}", file=sys.stderr)


def _fail(message: str, code: int) -> int:
    print(f"trackerapi: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
