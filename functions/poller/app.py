"""Poller state machine task -> one poll of an asynchronous provider's job (or, after repeated errors, its end)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom import ledger
from darkroom.jobs.polling import handle_step
from darkroom.observability import logger, metrics


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # A poll is three state transitions of its job's execution: the wait, this task, the choice after it.
    with ledger.metering(context, sfn_transitions=3):
        return handle_step(event)
