"""Step Functions locally: moto's executor runs the template's real state machine definitions, and the Lambda tasks
they call are dispatched in-process to darkroom's handlers.

moto runs a Lambda function in Docker, which darkroom does without. Its executor invokes Lambda through moto's own
Lambda API, which ends in `LambdaBackend.invoke`: that one private method is replaced, for the functions of the
template only, by a call of the local function. The hook is written against MOTO_VERSION (pinned in
requirements-dev.txt); `install` refuses any other version, and tests/integration/test_step_functions_local.py runs
a real execution through it, so an upgrade that moves the method fails loudly rather than silently running nothing.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from typing import Any

from darkroom_local.lambdas import LocalFunction

MOTO_VERSION = "5.2.5"

_lock = threading.Lock()
_functions: dict[str, LocalFunction] = {}  # by function name and by ARN
_original_invoke: Any = None


def enable_executor(moto_url: str) -> None:
    """moto only records executions unless told to run them."""
    request = urllib.request.Request(
        f"{moto_url}/moto-api/config",
        data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()


def install(functions: dict[str, LocalFunction]) -> None:
    """Route Lambda invocations of these functions (keyed by name and ARN) to them. Others go to moto as before."""
    global _original_invoke
    import moto
    from moto.awslambda.models import LambdaBackend

    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"darkroom's local Step Functions hook is written for moto {MOTO_VERSION}, not {moto.__version__}: "
            "check LambdaBackend.invoke, then update MOTO_VERSION and requirements-dev.txt together"
        )
    with _lock:
        _functions.clear()
        _functions.update(functions)
        if _original_invoke is None:
            _original_invoke = LambdaBackend.invoke
            LambdaBackend.invoke = _invoke  # type: ignore[method-assign,assignment]


def uninstall() -> None:
    with _lock:
        _functions.clear()


def _invoke(
    backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
) -> Any:
    with _lock:
        function = _functions.get(function_name)
    if function is None:
        return _original_invoke(backend, function_name, qualifier, body, headers, response_headers)
    event = json.loads(body) if body else {}
    try:
        result = function.invoke(event)
        payload = json.dumps(result).encode()
    except Exception as exc:
        # What Lambda answers for a handler's exception: Step Functions names the error by its errorType.
        response_headers["x-amz-function-error"] = "Unhandled"
        payload = json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)[:1000]}).encode()
    response_headers["Content-Length"] = str(len(payload))
    return payload
