"""Lambda functions run in-process: each handler loaded from its code directory, called with a Lambda-like context."""

from __future__ import annotations

import contextvars
import importlib.util
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter, clear_context_keys

from darkroom_local.template import FunctionSpec

Handler = Callable[[dict[str, Any], Any], Any]

# Each invocation's own copy of every powertools formatter's keys; None outside invocations.
_LOG_KEYS: contextvars.ContextVar[dict[int, dict[str, Any]] | None] = contextvars.ContextVar(
    "darkroom_local_log_keys", default=None
)


@dataclass
class LambdaContext:
    function_name: str
    timeout_s: int
    aws_request_id: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    log_group_name: str = "local"
    log_stream_name: str = "local"

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LocalFunction:
    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        module_name, _, function_name = spec.handler.rpartition(".")
        path = spec.code_dir / f"{module_name.replace('.', '/')}.py"
        module_spec = importlib.util.spec_from_file_location(f"darkroom_fn_{spec.logical_id}", path)
        assert module_spec and module_spec.loader, path
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        self.handler: Handler = getattr(module, function_name)
        isolate_invocation_log_keys()
        # Every invocation, as Lambda would bill it: what the closing figures of a run count.
        self.invoked = 0
        self._count_lock = threading.Lock()

    def invoke(self, event: dict[str, Any]) -> Any:
        with self._count_lock:
            self.invoked += 1
        context = LambdaContext(
            self.spec.logical_id, self.spec.timeout_s, str(uuid.uuid4()), memory_limit_in_mb=self.spec.memory_mb
        )
        # A context of its own, as a fresh execution environment: nothing set by the caller's thread or by another
        # invocation (appended keys, powertools' thread-safe keys) reaches it, and nothing it sets outlives it.
        return contextvars.Context().run(self._invoke, event, context)

    def _invoke(self, event: dict[str, Any], context: LambdaContext) -> Any:
        _LOG_KEYS.set({})
        clear_context_keys()  # else the first removal mutates powertools' module-wide default dict
        return self.handler(event, context)


def isolate_invocation_log_keys() -> None:
    """Give every powertools JSON formatter in this process per-invocation keys.

    powertools' Logger keeps appended keys (and `inject_lambda_context`'s function_name, function_request_id,
    cold_start, correlation_id) in its formatter's `log_format` dict: one per process, which in AWS is one invocation
    at a time. Here one process runs every function on threads, so that dict would mix invocations. `append_keys`
    mutates it and `clear_state` reassigns it, so a property on the class is what catches both. Outside invocations
    (module import time) the shared dict is used, as in AWS; an invocation starts from a copy of it.
    """
    for candidate in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(candidate, "handlers", []):
            formatter = handler.formatter
            if isinstance(formatter, LambdaPowertoolsFormatter) and not isinstance(formatter, _InvocationKeys):
                formatter.__class__ = _isolated_class(type(formatter))


class _InvocationKeys:
    """Mixed into a formatter's class: `log_format` is the current invocation's, else the process-wide one."""

    @property
    def log_format(self) -> dict[str, Any]:
        shared: dict[str, Any] = self.__dict__["log_format"]
        invocation = _LOG_KEYS.get()
        if invocation is None:
            return shared
        if id(self) not in invocation:
            invocation[id(self)] = dict(shared)
        return invocation[id(self)]

    @log_format.setter
    def log_format(self, value: dict[str, Any]) -> None:
        invocation = _LOG_KEYS.get()
        if invocation is None:
            self.__dict__["log_format"] = value
        else:
            invocation[id(self)] = value


_isolated_classes: dict[type, type] = {}


def _isolated_class(cls: type) -> type:
    if cls not in _isolated_classes:
        _isolated_classes[cls] = type(cls.__name__, (_InvocationKeys, cls), {"__module__": __name__})
    return _isolated_classes[cls]
