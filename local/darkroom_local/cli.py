"""`darkroom`: the local stack, the provider emulator, and API keys for a deployed stack."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from darkroom_local.stack import LocalStack


def run(args: argparse.Namespace) -> int:
    from darkroom_local.stack import LocalStack, StackConfig

    config = StackConfig.from_env()
    if args.port:
        config.port = args.port
    stack = LocalStack(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack.start()
    _remember_local_stack(stack)
    provider = f"emulator {stack.emulator.url}" if stack.emulator else "OpenAI (real calls, real bills)"
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    print(
        f"""
darkroom is running.
  API        {stack.api_url}
  provider   {provider}
  AWS (moto) {stack.moto_url}

  export DARKROOM_URL={stack.api_url}
  export DARKROOM_API_KEY={stack.api_keys["dev"]}   # tenant "dev"
  # a second tenant, to see that jobs are private: {stack.api_keys["dev-2"]}

  curl -s $DARKROOM_URL/v1/images/generations -H "Authorization: Bearer $DARKROOM_API_KEY" \\
       -H 'content-type: application/json' -d '{{"prompt": "a lighthouse at dusk", "size": "1536x1024"}}'
  # an edit, multipart as the openai SDK sends it:
  curl -s $DARKROOM_URL/v1/images/edits -H "Authorization: Bearer $DARKROOM_API_KEY" \\
       -F "image[]=@photo.png" -F prompt="make it a watercolour"
  # or drop a file into the bucket (s3://{bucket}) under uploads/dev/drop/ with x-amz-meta-prompt

Ctrl-C stops it.""",
        flush=True,
    )
    stop.wait()
    print("stopping darkroom...", flush=True)
    stack.stop()
    LOCAL_STATE.unlink(missing_ok=True)
    return 0


def _remember_local_stack(stack: LocalStack) -> None:
    """Where the running stack's AWS lives, for `darkroom keys --local` in another terminal."""
    names = (
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "API_KEYS_TABLE",
        "TENANTS_TABLE",
    )
    LOCAL_STATE.parent.mkdir(exist_ok=True)
    LOCAL_STATE.write_text(json.dumps({"api": stack.api_url, "environment": {n: os.environ[n] for n in names}}))


def emulator(args: argparse.Namespace) -> int:
    from darkroom_local.emulator import serve

    serve(args.port, args.host)
    return 0


LOCAL_STATE = Path(".darkroom") / "local.json"


def _use_table(args: argparse.Namespace, variable: str, output: str) -> None:
    """Point darkroom at one of a stack's tables: a deployed stack's (--table, AWS credentials from the
    environment) or the running local stack's (--local, from the file `darkroom run` writes)."""
    if args.local:
        try:
            state = json.loads(LOCAL_STATE.read_text())
        except (OSError, ValueError):
            raise SystemExit(f"no local stack found ({LOCAL_STATE}): start one with `darkroom run`") from None
        os.environ.update(state["environment"])
    elif args.table:
        os.environ[variable] = args.table
    elif not os.environ.get(variable):
        raise SystemExit(f"name the table with --table (the stack's {output} output), or use --local")
    from darkroom import aws

    aws.reset()


def _use_keys_table(args: argparse.Namespace) -> None:
    _use_table(args, "API_KEYS_TABLE", "ApiKeysTableName")


def keys_create(args: argparse.Namespace) -> int:
    _use_keys_table(args)
    from darkroom.tenants import create_api_key, hash_key, key_id

    key = create_api_key(args.tenant, name=args.name)
    print(key)
    print(
        f"# {key_id(hash_key(key))}: the key for tenant {args.tenant!r}; stored only hashed, it cannot be shown again",
        file=sys.stderr,
    )
    return 0


def keys_list(args: argparse.Namespace) -> int:
    _use_keys_table(args)
    from darkroom.tenants import list_api_keys

    records = list_api_keys(args.tenant)
    if args.json:
        print(json.dumps([record.as_dict() for record in records], indent=2))
        return 0
    print(f"{'ID':<21} {'TENANT':<20} {'STATUS':<8} {'CREATED':<25} NAME")
    for record in records:
        status = "revoked" if record.revoked_at else "active"
        print(f"{record.id:<21} {record.tenant:<20} {status:<8} {record.created_at:<25} {record.name}")
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    _use_keys_table(args)
    from darkroom.tenants import CACHE_TTL_S, revoke_api_key

    try:
        record = revoke_api_key(args.key_id)
    except KeyError:
        print(f"no key {args.key_id}; `darkroom keys list` shows the ids", file=sys.stderr)
        return 1
    print(f"revoked {record.id} of tenant {record.tenant!r}; it stops working within {CACHE_TTL_S:.0f} s")
    return 0


def tenants_set(args: argparse.Namespace) -> int:
    """Set (or, with --default, drop) one tenant's own quotas; the deployment's defaults apply to the rest."""
    from decimal import Decimal, InvalidOperation

    values: dict[str, int | Decimal | None] = {name: None for name in args.default or []}
    for name, count in (("max_in_flight", args.max_in_flight), ("submits_per_minute", args.per_minute)):
        if count is not None:
            if count < 0:
                raise SystemExit(f"--{name.replace('_', '-')} is a whole number, 0 for no limit")
            values[name] = count
    if args.budget is not None:
        try:
            budget = Decimal(args.budget).quantize(Decimal("0.01"))
        except InvalidOperation:
            budget = Decimal(-1)
        if not budget.is_finite() or budget < 0:
            raise SystemExit("--budget is USD, e.g. 250 or 99.50")
        values["monthly_budget_usd"] = budget
    _use_table(args, "TENANTS_TABLE", "TenantsTableName")
    from darkroom import quotas

    quotas.set_limits(args.tenant, **values)
    return _show_tenant(args.tenant)


def tenants_show(args: argparse.Namespace) -> int:
    _use_table(args, "TENANTS_TABLE", "TenantsTableName")
    return _show_tenant(args.tenant)


def _show_tenant(tenant: str) -> int:
    from darkroom import quotas

    limits = quotas.limits_for(tenant)
    print(
        json.dumps(
            {"tenant": tenant, **limits.as_dict(), "budget": quotas.budget_state(tenant, quotas.month_of())},
            indent=2,
        )
    )
    return 0


def webhooks_listen(args: argparse.Namespace) -> int:
    from darkroom_local.webhook_listener import WebhookListener

    listener = WebhookListener(args.port, args.secret, show=lambda line: print(line, flush=True))
    print(f"listening on {listener.url}; deliveries are verified with the given secret. Ctrl-C stops.", flush=True)
    try:
        listener.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        listener.server_close()
    return 0


def _which_stack(table_output: str) -> argparse.ArgumentParser:
    """--table (a deployed stack's table, named by its output) or --local (the stack `darkroom run` is running)."""
    parent = argparse.ArgumentParser(add_help=False)
    where = parent.add_mutually_exclusive_group()
    where.add_argument("--table", help=f"a deployed stack's {table_output} output")
    where.add_argument("--local", action="store_true", help="the stack `darkroom run` is running")
    return parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="darkroom", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run_parser = commands.add_parser("run", help="run the whole pipeline locally (DARKROOM_PORT, default 3000)")
    run_parser.add_argument("--port", type=int, default=None)
    run_parser.set_defaults(func=run)

    emulator_parser = commands.add_parser("emulator", help="run the OpenAI Images API emulator alone")
    emulator_parser.add_argument("--port", type=int, default=8080)
    emulator_parser.add_argument("--host", default="127.0.0.1")
    emulator_parser.set_defaults(func=emulator)

    keys_parser = commands.add_parser("keys", help="API keys: create, list, revoke (deployed or local stack)")
    keys_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    table = _which_stack("ApiKeysTableName")
    create_parser = keys_commands.add_parser("create", parents=[table], help="create a key and print it once")
    create_parser.add_argument("--tenant", required=True)
    create_parser.add_argument("--name", default="", help="a label to recognise the key by")
    create_parser.set_defaults(func=keys_create)
    list_parser = keys_commands.add_parser("list", parents=[table], help="list keys (ids, never the keys)")
    list_parser.add_argument("--tenant", default=None)
    list_parser.add_argument("--json", action="store_true")
    list_parser.set_defaults(func=keys_list)
    revoke_parser = keys_commands.add_parser("revoke", parents=[table], help="revoke a key by its id")
    revoke_parser.add_argument("key_id")
    revoke_parser.set_defaults(func=keys_revoke)

    tenants_parser = commands.add_parser("tenants", help="tenant quotas: show, set (deployed or local stack)")
    tenants_commands = tenants_parser.add_subparsers(dest="tenants_command", required=True)
    tenants_table = _which_stack("TenantsTableName")
    show_parser = tenants_commands.add_parser("show", parents=[tenants_table], help="a tenant's quotas and budget")
    show_parser.add_argument("tenant")
    show_parser.set_defaults(func=tenants_show)
    set_parser = tenants_commands.add_parser("set", parents=[tenants_table], help="set a tenant's own quotas")
    set_parser.add_argument("tenant")
    set_parser.add_argument("--max-in-flight", type=int, help="jobs accepted and not ended (0: no limit)")
    set_parser.add_argument("--per-minute", type=int, help="submissions a minute (0: no limit)")
    set_parser.add_argument("--budget", help="USD a calendar month (UTC)")
    set_parser.add_argument(
        "--default",
        action="append",
        choices=["max_in_flight", "submits_per_minute", "monthly_budget_usd"],
        help="drop the tenant's own value: the deployment's default applies",
    )
    set_parser.set_defaults(func=tenants_set)

    webhooks_parser = commands.add_parser("webhooks", help="webhooks: a local receiver that verifies deliveries")
    webhooks_commands = webhooks_parser.add_subparsers(dest="webhooks_command", required=True)
    listen_parser = webhooks_commands.add_parser("listen", help="receive, verify and print deliveries on 127.0.0.1")
    listen_parser.add_argument("--port", type=int, required=True)
    listen_parser.add_argument("--secret", required=True, help="the whsec_ secret (GET /v1/webhooks/secret)")
    listen_parser.set_defaults(func=webhooks_listen)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
