"""EventBridge schedule -> one batcher run (batch-tier jobs sent as OpenAI batches); batch poller state machine task
-> one step of following a batch."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom import ledger
from darkroom.observability import logger, metrics


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    remaining_ms = context.get_remaining_time_in_millis
    if isinstance(event, dict) and "batch_id" in event:
        from darkroom.batches.follow import handle_step

        # A step is three transitions of the batch's execution; what it does is shared by the jobs it ends.
        with ledger.metering(context, adopt=False, sfn_transitions=3):
            return handle_step(event, remaining_ms)
    from darkroom.batches.batcher import run

    with ledger.metering(context, adopt=False):  # shared by the jobs of the batches it sends
        return run(remaining_ms)
