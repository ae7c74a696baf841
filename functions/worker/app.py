"""Jobs queue (and its dead-letter queue) -> one job attempt per message, failing only the records that failed."""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom.jobs.run import handle_queue_message
from darkroom.observability import logger, metrics


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    def record_handler(record: SQSRecord) -> None:
        handle_queue_message(record.body, record.event_source_arn, context.get_remaining_time_in_millis)

    # A processor per invocation: it keeps per-batch state, and the local stack runs invocations side by side.
    # A batch whose every record failed is still answered with the list, not raised: with one job per batch
    # (the default) that is the common case, and it is an expected outcome (a busy or retried job), not a crash.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
