"""Running the service: `schemas export`, `demo` and `run`."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from schemas.export import export_json_schemas
from services.app import runner
from services.app.asyncapi import asyncapi_document
from services.commands.common import (
    ASYNCAPI_FILE_NAME,
    EXIT_OK,
    UsageError,
)
from services.demo import FreshStartError, run_demo
from services.runtime.settings import get_settings

# schemas ------------------------------------------------------------------------------------


def add_schemas_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="schemas_action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write <topic>.schema.json for every topic, and asyncapi.json",
        description="Write the JSON Schema of every consumed and produced topic's event, and "
        "the AsyncAPI document of every topic giftledger reads and writes.",
    )
    export.add_argument("directory", type=Path, metavar="DIR")


def schemas_command(args: argparse.Namespace) -> int:
    assert args.schemas_action == "export", args.schemas_action
    try:
        for path in export_json_schemas(args.directory):
            print(path)
        asyncapi_path = args.directory / ASYNCAPI_FILE_NAME
        document = asyncapi_document(get_settings().kafka_topic_prefix)
        asyncapi_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    except OSError as error:
        raise UsageError(f"cannot write the schemas to {args.directory}: {error}") from None
    print(asyncapi_path)
    return EXIT_OK


# demo ---------------------------------------------------------------------------------------


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-wait", action="store_true", help="exit right after the summary instead of serving"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="first remove the embedded database under DATA_DIR (.giftledger/), to start from an "
        "empty ledger; refused when DATABASE_URL is set",
    )


def demo_command(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        return asyncio.run(run_demo(settings, wait=not args.no_wait, fresh=args.fresh))
    except FreshStartError as error:
        raise UsageError(str(error)) from error


# run ----------------------------------------------------------------------------------------


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api", action="store_true", help="also serve the finance API on API_HOST:API_PORT"
    )
    parser.add_argument(
        "--payout-rail",
        action="store_true",
        help="also run the simulated bank (answers payouts.requested on payouts.updated)",
    )
    parser.epilog = (
        "Reads KAFKA_BOOTSTRAP_SERVERS (unset: an embedded broker) and DATABASE_URL (unset: the "
        "embedded PostgreSQL, migrated on start). Stops cleanly on SIGTERM or Ctrl-C."
    )


def run_command(args: argparse.Namespace) -> int:
    asyncio.run(runner.run(get_settings(), with_payout_rail=args.payout_rail, with_api=args.api))
    return EXIT_OK
