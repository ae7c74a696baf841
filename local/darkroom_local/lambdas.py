"""Lambda functions run in-process: each handler loaded from its code directory, called with a Lambda-like context."""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from darkroom_local.template import FunctionSpec

Handler = Callable[[dict[str, Any], Any], Any]


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

    def invoke(self, event: dict[str, Any]) -> Any:
        context = LambdaContext(self.spec.logical_id, self.spec.timeout_s, str(uuid.uuid4()))
        return self.handler(event, context)
