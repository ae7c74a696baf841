"""`darkroom`: the local stack, the provider emulator, and API keys for a deployed stack."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


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
    provider = f"emulator {stack.emulator.url}" if stack.emulator else "OpenAI (real calls, real bills)"
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

Ctrl-C stops it.""",
        flush=True,
    )
    stop.wait()
    print("stopping darkroom...", flush=True)
    stack.stop()
    return 0


def emulator(args: argparse.Namespace) -> int:
    from darkroom_local.emulator import serve

    serve(args.port, args.host)
    return 0


def keys_create(args: argparse.Namespace) -> int:
    """Create an API key in a deployed stack's keys table (AWS credentials from the environment)."""
    os.environ["API_KEYS_TABLE"] = args.table
    from darkroom.tenants import create_api_key

    key = create_api_key(args.tenant, name=args.name)
    print(key)
    print(f"# the key for tenant {args.tenant!r}; it is stored only hashed and cannot be shown again", file=sys.stderr)
    return 0


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

    keys_parser = commands.add_parser("keys", help="API keys for a deployed stack")
    keys_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create_parser = keys_commands.add_parser("create", help="create a key for a tenant and print it once")
    create_parser.add_argument("--tenant", required=True)
    create_parser.add_argument("--table", required=True, help="the stack's ApiKeysTableName output")
    create_parser.add_argument("--name", default="", help="a label to recognise the key by")
    create_parser.set_defaults(func=keys_create)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
