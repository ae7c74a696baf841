"""Jobs queue (and its dead-letter queue) -> one job attempt per message, failing only the records that failed."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom.jobs.run import handle_queue_message
from darkroom.observability import logger, metrics
from darkroom.sqs_batches import partial_batch_response


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return partial_batch_response(
        event, lambda body, source: handle_queue_message(body, source, context.get_remaining_time_in_millis)
    )
