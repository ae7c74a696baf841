"""EventBridge schedule -> one sweep over jobs nothing else will move on."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom.jobs.sweep import sweep
from darkroom.observability import logger, metrics


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return sweep(context.get_remaining_time_in_millis).as_dict()
