"""Jobs queue (and its dead-letter queue) -> one job attempt per message, failing only the records that failed."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom import ledger
from darkroom.jobs.run import handle_queue_message
from darkroom.observability import logger, metrics
from darkroom.sqs_batches import partial_batch_response


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    def attempt(body: str, source: str) -> None:
        # The message's receive and delete are the job's too, though Lambda's poller makes them.
        with ledger.metering(context, sqs_requests=2):
            handle_queue_message(body, source, context.get_remaining_time_in_millis)

    return partial_batch_response(event, attempt)
