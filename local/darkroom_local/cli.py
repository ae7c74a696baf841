"""`darkroom`: the local stack, the provider emulator, the API from a terminal, and keys and quotas for a stack."""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import socket
import sys
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from darkroom_local.client_commands import USAGE, edit, generate, jobs

if TYPE_CHECKING:
    from darkroom_local.stack import LocalStack

LOCAL_STATE = Path(".darkroom") / "local.json"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def darkroom() -> None:
    """darkroom: image generation jobs. `darkroom run` starts the whole pipeline locally."""


darkroom.add_command(generate)
darkroom.add_command(edit)
darkroom.add_command(jobs)


def parse_parameter_overrides(texts: list[str]) -> dict[str, str]:
    """SAM's `--parameter-overrides` syntax: `Name=Value` or `ParameterKey=Name,ParameterValue=Value`, several in one
    string separated by spaces, values quoted as a shell quotes them."""
    overrides: dict[str, str] = {}
    for text in texts:
        try:
            tokens = shlex.split(text)
        except ValueError as exc:
            raise click.BadParameter(f"{exc}: {text!r}", param_hint="--parameter-overrides") from None
        for token in tokens:
            if token.startswith("ParameterKey="):
                key, _, value = token.removeprefix("ParameterKey=").partition(",ParameterValue=")
                if not _ or not key:
                    raise click.BadParameter(
                        f"{token!r}: expected ParameterKey=Name,ParameterValue=Value",
                        param_hint="--parameter-overrides",
                    )
            else:
                key, sep, value = token.partition("=")
                if not sep or not key:
                    raise click.BadParameter(f"{token!r}: expected Name=Value", param_hint="--parameter-overrides")
            overrides[key] = value
    return overrides


@darkroom.command()
@click.option("--port", type=click.IntRange(0, 65535), envvar="DARKROOM_PORT", default=3000, show_default=True)
@click.option(
    "--parameter-overrides",
    "overrides",
    multiple=True,
    # DARKROOM_PARAMETER_OVERRIDES is read in `run` as one string: Click would split it on spaces, quotes and all.
    help="template.yaml parameters, as sam deploy takes them: 'ProviderTimeoutSeconds=20 ModerationMode=prompt' "
    "(also DARKROOM_PARAMETER_OVERRIDES).",
)
@click.option(
    "--aws-port",
    type=click.IntRange(0, 65535),
    envvar="DARKROOM_AWS_PORT",
    default=None,
    help="moto's server, the local AWS  [default: --port + 1]",
)
@click.option(
    "--unchecked",
    is_flag=True,
    help="Take values a deployment would refuse (e.g. ProviderTimeoutSeconds=5 WorkerTimeoutSeconds=20).",
)
@click.argument("more_overrides", nargs=-1, metavar="[Name=Value]...")
def run(
    port: int, overrides: tuple[str, ...], aws_port: int | None, unchecked: bool, more_overrides: tuple[str, ...]
) -> None:
    """Run the whole pipeline on 127.0.0.1: API, functions, moto's AWS and the provider emulator."""
    from darkroom_local.stack import LocalStack, StackConfig

    config = StackConfig.from_env()
    config.port = port
    config.aws_port = (port + 1 if port else 0) if aws_port is None else aws_port
    for taken in (p for p in (config.port, config.aws_port) if p and not _port_free(p)):
        _port_busy(taken)
    given = [*overrides, *more_overrides]
    from_env = os.environ.get("DARKROOM_PARAMETER_OVERRIDES", "")
    config.parameters = parse_parameter_overrides(given or ([from_env] if from_env.strip() else []))
    config.check_parameters = not unchecked
    try:
        stack = LocalStack(config)
    except ValueError as exc:  # a parameter the template does not have, or a value it refuses
        hint = "" if unchecked else " (--unchecked takes values only the local stack accepts)"
        click.echo(f"darkroom: {exc}{hint}", err=True)
        sys.exit(USAGE)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack.start()
    except OSError as exc:  # taken between the check and the start
        if exc.errno != errno.EADDRINUSE:
            raise
        _port_busy(port)
    _remember_local_stack(stack)
    _announce(stack)
    stop.wait()
    print("stopping darkroom...", flush=True)
    stack.stop()
    LOCAL_STATE.unlink(missing_ok=True)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_busy(port: int) -> None:
    click.echo(
        f"darkroom: port {port} is already in use (another `darkroom run`?); stop it or choose others with "
        "--port / DARKROOM_PORT and --aws-port / DARKROOM_AWS_PORT",
        err=True,
    )
    sys.exit(1)


def _announce(stack: LocalStack) -> None:
    provider = f"emulator {stack.emulator.url}" if stack.emulator else "OpenAI (real calls, real bills)"
    bucket = stack.template.attributes["OutputsBucket"]["Ref"]
    overridden = " ".join(f"{k}={v}" for k, v in sorted(stack.config.parameters.items())) or "none"
    print(
        f"""
darkroom is running.
  API        {stack.api_url}      (playground: {stack.api_url}/)
  provider   {provider}
  AWS (moto) {stack.moto_url}   (bucket {bucket}; state lives in memory)
  parameters {overridden}

  export DARKROOM_URL={stack.api_url}
  export DARKROOM_API_KEY={stack.api_keys["dev"]}   # tenant "dev"
  # a second tenant, to see that jobs are private: {stack.api_keys["dev-2"]}

  darkroom generate "a lighthouse at dusk" --size 1536x1024 --out images/
  curl -s $DARKROOM_URL/v1/images/generations -H "Authorization: Bearer $DARKROOM_API_KEY" \\
       -H 'content-type: application/json' -H 'Prefer: wait=25' -d '{{"prompt": "a lighthouse at dusk"}}'
  # AWS as the functions see it: aws --endpoint-url {stack.moto_url} s3 ls s3://{bucket}/outputs/dev/

Ctrl-C stops it.""",
        flush=True,
    )


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


@darkroom.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def emulator(port: int, host: str) -> None:
    """Run the OpenAI Images API emulator alone."""
    from darkroom_local.emulator import serve

    serve(port, host)


def _which_stack(table_output: str) -> Any:
    """--table (a deployed stack's table, named by its output) or --local (the stack `darkroom run` is running)."""

    def decorate(command: Any) -> Any:
        command = click.option("--local", is_flag=True, help="The stack `darkroom run` is running.")(command)
        return click.option("--table", help=f"A deployed stack's {table_output} output.")(command)

    return decorate


def _use_table(local: bool, table: str | None, variable: str, output: str) -> None:
    """Point darkroom at one of a stack's tables: a deployed stack's (--table, AWS credentials from the
    environment) or the running local stack's (--local, from the file `darkroom run` writes)."""
    if local and table:
        raise click.UsageError("--table and --local name two different stacks: give one")
    if local:
        try:
            state = json.loads(LOCAL_STATE.read_text())
        except (OSError, ValueError):
            raise SystemExit(f"no local stack found ({LOCAL_STATE}): start one with `darkroom run`") from None
        os.environ.update(state["environment"])
    elif table:
        os.environ[variable] = table
    elif not os.environ.get(variable):
        raise SystemExit(f"name the table with --table (the stack's {output} output), or use --local")
    from darkroom import aws

    aws.reset()


@darkroom.group()
def keys() -> None:
    """API keys: create, list, revoke (deployed or local stack)."""


@keys.command("create")
@click.option("--tenant", required=True)
@click.option("--name", default="", help="A label to recognise the key by.")
@_which_stack("ApiKeysTableName")
def keys_create(tenant: str, name: str, table: str | None, local: bool) -> None:
    """Create a key and print it once."""
    _use_table(local, table, "API_KEYS_TABLE", "ApiKeysTableName")
    from darkroom.tenants import create_api_key, hash_key, key_id

    key = create_api_key(tenant, name=name)
    print(key)
    print(
        f"# {key_id(hash_key(key))}: the key for tenant {tenant!r}; stored only hashed, it cannot be shown again",
        file=sys.stderr,
    )


@keys.command("list")
@click.option("--tenant", default=None)
@click.option("--json", "as_json", is_flag=True)
@_which_stack("ApiKeysTableName")
def keys_list(tenant: str | None, as_json: bool, table: str | None, local: bool) -> None:
    """List keys (ids, never the keys)."""
    _use_table(local, table, "API_KEYS_TABLE", "ApiKeysTableName")
    from darkroom.tenants import list_api_keys

    records = list_api_keys(tenant)
    if as_json:
        print(json.dumps([record.as_dict() for record in records], indent=2))
        return
    print(f"{'ID':<21} {'TENANT':<20} {'STATUS':<8} {'CREATED':<25} NAME")
    for record in records:
        status = "revoked" if record.revoked_at else "active"
        print(f"{record.id:<21} {record.tenant:<20} {status:<8} {record.created_at:<25} {record.name}")


@keys.command("revoke")
@click.argument("key_id")
@_which_stack("ApiKeysTableName")
def keys_revoke(key_id: str, table: str | None, local: bool) -> None:
    """Revoke a key by its id."""
    _use_table(local, table, "API_KEYS_TABLE", "ApiKeysTableName")
    from darkroom.tenants import CACHE_TTL_S, revoke_api_key

    try:
        record = revoke_api_key(key_id)
    except KeyError:
        print(f"no key {key_id}; `darkroom keys list` shows the ids", file=sys.stderr)
        sys.exit(1)
    print(f"revoked {record.id} of tenant {record.tenant!r}; it stops working within {CACHE_TTL_S:.0f} s")


@darkroom.group()
def tenants() -> None:
    """Tenant quotas: show, set (deployed or local stack)."""


@tenants.command("show")
@click.argument("tenant")
@_which_stack("TenantsTableName")
def tenants_show(tenant: str, table: str | None, local: bool) -> None:
    """A tenant's quotas and budget."""
    _use_table(local, table, "TENANTS_TABLE", "TenantsTableName")
    _show_tenant(tenant)


@tenants.command("set")
@click.argument("tenant")
@click.option("--max-in-flight", type=int, help="Jobs accepted and not ended (0: no limit).")
@click.option("--per-minute", type=int, help="Submissions a minute (0: no limit).")
@click.option("--budget", help="USD a calendar month (UTC).")
@click.option(
    "--default",
    "defaults",
    multiple=True,
    type=click.Choice(["max_in_flight", "submits_per_minute", "monthly_budget_usd"]),
    help="Drop the tenant's own value: the deployment's default applies.",
)
@_which_stack("TenantsTableName")
def tenants_set(
    tenant: str,
    max_in_flight: int | None,
    per_minute: int | None,
    budget: str | None,
    defaults: tuple[str, ...],
    table: str | None,
    local: bool,
) -> None:
    """Set (or, with --default, drop) one tenant's own quotas; the deployment's defaults apply to the rest."""
    values: dict[str, int | Decimal | None] = {name: None for name in defaults}
    for name, count in (("max_in_flight", max_in_flight), ("submits_per_minute", per_minute)):
        if count is not None:
            if count < 0:
                raise SystemExit(f"--{name.replace('_', '-')} is a whole number, 0 for no limit")
            values[name] = count
    if budget is not None:
        try:
            amount = Decimal(budget).quantize(Decimal("0.01"))
        except InvalidOperation:
            amount = Decimal(-1)
        if not amount.is_finite() or amount < 0:
            raise SystemExit("--budget is USD, e.g. 250 or 99.50")
        values["monthly_budget_usd"] = amount
    _use_table(local, table, "TENANTS_TABLE", "TenantsTableName")
    from darkroom import quotas

    quotas.set_limits(tenant, **values)
    _show_tenant(tenant)


def _show_tenant(tenant: str) -> None:
    from darkroom import quotas

    limits = quotas.limits_for(tenant)
    state = {"tenant": tenant, **limits.as_dict(), "budget": quotas.budget_state(tenant, quotas.month_of())}
    print(json.dumps(state, indent=2))


@darkroom.group()
def webhooks() -> None:
    """Webhooks: a local receiver that verifies deliveries."""


@webhooks.command("listen")
@click.option("--port", type=click.IntRange(0, 65535), required=True)
@click.option("--secret", required=True, help="The whsec_ secret (GET /v1/webhooks/secret).")
def webhooks_listen(port: int, secret: str) -> None:
    """Receive, verify and print deliveries on 127.0.0.1."""
    from darkroom_local.webhook_listener import WebhookListener

    listener = WebhookListener(port, secret, show=lambda line: print(line, flush=True))
    print(f"listening on {listener.url}; deliveries are verified with the given secret. Ctrl-C stops.", flush=True)
    try:
        listener.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        listener.server_close()


def main(argv: list[str] | None = None) -> int:
    """The command's exit code: what it returned or exited with; 2 for a usage error, as Click says it."""
    try:
        result = darkroom.main(args=argv, prog_name="darkroom", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.exceptions.Exit as exc:  # --help
        return int(exc.exit_code)
    except SystemExit as exc:
        if isinstance(exc.code, int):
            return exc.code
        raise  # a message for the user: the interpreter prints it and exits 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
