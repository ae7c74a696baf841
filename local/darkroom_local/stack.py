"""The whole darkroom pipeline on one machine: moto for AWS, the emulator for the image API, handlers in-process.

Everything is wired from template.yaml (resources, routes, queue triggers, environment), so what runs here is what
deploys. The handlers share this process's environment, which the stack sets from the template.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Any

from darkroom_local import step_functions
from darkroom_local.emulator import Emulator, EmulatorConfig
from darkroom_local.front import ApiFront
from darkroom_local.lambdas import LocalFunction
from darkroom_local.moto_atomic import serialise_dynamodb, watch_writes
from darkroom_local.pollers import QueuePoller
from darkroom_local.resources import create_resources
from darkroom_local.schedules import Schedule
from darkroom_local.template import LocalTemplate
from darkroom_local.trail import Trail

log = logging.getLogger("darkroom.local")
OPENAI_BASE_URL = "https://api.openai.com/v1"
EMULATOR_KEY = "sk-emulator-local"
STOP_GRACE_S = 10.0  # how long Ctrl-C waits for invocations under way
# Where the local stack's defaults differ from a fresh deployment's: the emulator serves WaveSpeed's API too, and the
# gateway route's (at the same address, unless GatewayBaseUrl names another).
LOCAL_PARAMETERS = {"EnabledProviderRoutes": "openai,gateway,wavespeed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StackConfig:
    port: int = 3000
    # moto's server (the local AWS); 0: any free port.
    aws_port: int = 0
    # "emulator" (default) or "openai" (needs OPENAI_API_KEY; real calls, real bills).
    provider: str = "emulator"
    api_key: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    emulator: EmulatorConfig | None = None
    # Extra environment for the functions (e.g. POWERTOOLS_LOG_LEVEL for quiet tests).
    environment: dict[str, str] = field(default_factory=dict)
    poll_wait_s: int = 1
    # Fraction of received messages the pollers send again, as SQS's at-least-once delivery may (fault runs).
    duplicate_rate: float = 0.0
    # False: only AWS resources, functions and the emulator, for tests that invoke handlers themselves.
    serve: bool = True
    # Record every delivery and DynamoDB write per job (fault runs print a failing job's trail).
    trail: bool = False
    # Run scheduled functions this often instead of at their template rate (tests cannot wait a minute).
    schedule_interval_s: float | None = None
    # Refuse parameter values CloudFormation would refuse (`darkroom run` does unless told --unchecked).
    check_parameters: bool = False

    @classmethod
    def from_env(cls) -> StackConfig:
        return cls(
            port=int(os.environ.get("DARKROOM_PORT", "3000")),
            provider=os.environ.get("DARKROOM_PROVIDER", "emulator"),
            api_key=os.environ.get("DARKROOM_API_KEY") or None,
        )


class LocalStack:
    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self.template = LocalTemplate(
            {**LOCAL_PARAMETERS, **self.config.parameters}, checked=self.config.check_parameters
        )
        self.template.check_rules()  # the stack CloudFormation would refuse is refused here too
        self.emulator: Emulator | None = None
        self.front: ApiFront | None = None
        self.pollers: list[QueuePoller] = []
        self.schedules: list[Schedule] = []
        self.functions: dict[str, LocalFunction] = {}
        self.api_keys: dict[str, str] = {}
        self._moto: Any = None
        self.moto_url = ""
        self._saved_env: dict[str, str | None] = {}
        self.trail = Trail() if self.config.trail else None

    @property
    def api_url(self) -> str:
        assert self.front is not None
        return self.front.url

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from moto.server import ThreadedMotoServer

        serialise_dynamodb()  # conditional writes must be atomic here as in DynamoDB
        watch_writes(self.trail.dynamodb_write if self.trail else None)
        provider_base_url, provider_key = self._provider()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
        moto_port = self.config.aws_port or free_port()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        self._moto.start()
        self.moto_url = f"http://127.0.0.1:{moto_port}"
        # moto keeps its state per process, not per server: start from nothing, whatever ran here before.
        urllib.request.urlopen(urllib.request.Request(f"{self.moto_url}/moto-api/reset", method="POST"), timeout=10)
        self._set_env(
            {
                "AWS_ENDPOINT_URL": self.moto_url,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": self.template.pseudo["AWS::Region"],
                "AWS_REGION": self.template.pseudo["AWS::Region"],
                "MOTO_PORT": str(moto_port),
            }
        )
        step_functions.enable_executor(self.moto_url)
        create_resources(
            self.template,
            secrets={
                "ProviderSecret": provider_key,
                "GatewaySecret": self._other_key("GATEWAY_API_KEY"),
                "WaveSpeedSecret": self._other_key("WAVESPEED_API_KEY"),
            },
        )
        specs = self.template.functions()
        self._set_env(self._function_environment(specs, provider_base_url))
        self._reset_darkroom()
        self.functions = {spec.logical_id: LocalFunction(spec) for spec in specs}
        step_functions.install(
            {
                key: function
                for logical_id, function in self.functions.items()
                for key in (self.template.attributes[logical_id]["Ref"], self.template.attributes[logical_id]["Arn"])
            }
        )
        self._seed_api_keys()
        if not self.config.serve:
            return
        api_functions = [f for f in self.functions.values() if f.spec.http_routes]
        cors = self.template.resolve(
            self.template.of_type("AWS::Serverless::HttpApi").get("HttpApi", {}).get("Properties", {})
        ).get("CorsConfiguration")
        self.front = ApiFront(api_functions, cors)
        self.front.start("127.0.0.1", self.config.port)
        # Events link jobs to the API: here, this front rather than an execute-api host that does not exist.
        self._set_env({"API_URL": self.front.url})
        self._reset_darkroom()
        for function in self.functions.values():
            for event in function.spec.sqs_events:
                queue_id = self._queue_logical_id(event["Queue"])
                self._check_visibility(function, queue_id)
                poller = QueuePoller(
                    function,
                    event,
                    self.template.attributes[queue_id]["QueueUrl"],
                    wait_s=self.config.poll_wait_s,
                    duplicate_rate=self.config.duplicate_rate,
                    trail=self.trail,
                )
                poller.start()
                self.pollers.append(poller)
            for expression in function.spec.schedules:
                schedule = Schedule(function, expression, interval_s=self.config.schedule_interval_s)
                schedule.start()
                self.schedules.append(schedule)

    def stop(self) -> None:
        for schedule in self.schedules:
            schedule.request_stop()
        for poller in self.pollers:
            poller.request_stop()
        if self.emulator:
            self.emulator.stop()  # ends hung provider calls at once, so workers under way wind down quickly
        deadline = time.monotonic() + STOP_GRACE_S
        for poller in self.pollers:
            poller.join(deadline)
        self.pollers = []
        for schedule in self.schedules:
            schedule.join(max(0.0, deadline - time.monotonic()))
        self.schedules = []
        if self.front:
            self.front.stop()
        if self._moto:
            self._moto.stop()
            self._moto = None
        watch_writes(None)
        step_functions.uninstall()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        self._reset_darkroom()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Wiring

    def _provider(self) -> tuple[str, str]:
        if self.config.provider == "openai":
            key = os.environ.get("OPENAI_API_KEY", "")
            if not key:
                raise SystemExit("DARKROOM_PROVIDER=openai needs OPENAI_API_KEY")
            return OPENAI_BASE_URL, key
        if self.config.provider != "emulator":
            raise SystemExit(f"DARKROOM_PROVIDER must be 'emulator' or 'openai', not {self.config.provider!r}")
        # The emulator takes only the key the stack put in the provider secrets, as a real provider would.
        self.emulator = Emulator(replace(self.config.emulator or EmulatorConfig.from_env(), api_key=EMULATOR_KEY))
        if self.trail:
            self.emulator.observer = self.trail.provider_call
        self.emulator.start("127.0.0.1", 0)
        return f"{self.emulator.url}/v1", EMULATOR_KEY

    def _other_key(self, variable: str) -> str:
        """The emulator's key; with real providers the variable's (unset: that route's jobs fail as unauthorized)."""
        return EMULATOR_KEY if self.config.provider == "emulator" else os.environ.get(variable, "")

    def _function_environment(self, specs: list[Any], provider_base_url: str) -> dict[str, str]:
        """One process runs every function, so their environments must agree where they overlap."""
        merged: dict[str, str] = {}
        for spec in specs:
            for name, value in spec.environment.items():
                if name in merged and merged[name] != value:
                    raise ValueError(f"functions disagree on {name}; the local stack runs them in one process")
                merged[name] = value
        merged["PROVIDER_BASE_URL"] = provider_base_url
        if self.emulator:
            merged["WAVESPEED_BASE_URL"] = self.emulator.url  # the emulator speaks WaveSpeed's API at its root
            merged["GATEWAY_BASE_URL"] = merged.get("GATEWAY_BASE_URL") or provider_base_url
            merged["ALLOW_PRIVATE_URLS"] = "true"  # its output links point at 127.0.0.1
        merged["ALLOW_HTTP_WEBHOOKS"] = "true"  # local subscribers listen on plain http
        # ... on 127.0.0.1, which the production guard refuses; DARKROOM_WEBHOOK_ALLOW_PRIVATE=0 turns it on.
        merged["WEBHOOK_ALLOW_PRIVATE"] = "false" if os.environ.get("DARKROOM_WEBHOOK_ALLOW_PRIVATE") == "0" else "true"
        merged["POWERTOOLS_METRICS_DISABLED"] = "true"  # EMF lines would drown the logs
        merged.update(self.config.environment)
        return merged

    def _check_visibility(self, function: LocalFunction, queue_id: str) -> None:
        """Lambda refuses an SQS trigger whose queue hides messages for less than the function may run."""
        properties = self.template.resources[queue_id].get("Properties", {})
        visibility = int(self.template.resolve(properties.get("VisibilityTimeout", 30)))
        if visibility < function.spec.timeout_s:
            raise ValueError(
                f"{queue_id} visibility {visibility} s is shorter than {function.spec.logical_id}'s "
                f"timeout {function.spec.timeout_s} s; Lambda would refuse this trigger"
            )

    def _queue_logical_id(self, queue_arn: str) -> str:
        for logical_id, attributes in self.template.attributes.items():
            if attributes.get("Arn") == queue_arn and "QueueUrl" in attributes:
                return logical_id
        raise KeyError(queue_arn)

    def _seed_api_keys(self) -> None:
        from darkroom.tenants import create_api_key

        self.api_keys["dev"] = create_api_key("dev", api_key=self.config.api_key, name="local dev key")
        # A second tenant, so isolation can be tried by hand: its jobs are 404 to the first.
        self.api_keys["dev-2"] = create_api_key("dev-2", name="local second tenant")

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    @staticmethod
    def _reset_darkroom() -> None:
        from darkroom import aws
        from darkroom.providers import registry

        aws.reset()
        registry.reset()
