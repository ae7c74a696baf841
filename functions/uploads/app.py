"""Uploads queue (S3 events under uploads/) -> upload jobs queued once their files are in, drop-ins made jobs."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom import ledger
from darkroom.observability import logger, metrics
from darkroom.sqs_batches import partial_batch_response
from darkroom.uploads import handle_queue_record


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    def arrived(body: str, _source: str) -> None:
        with ledger.metering(context, sqs_requests=2):
            handle_queue_record(body)

    return partial_batch_response(event, arrived)
