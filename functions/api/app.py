"""API Gateway (HTTP API) -> darkroom's routes."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from darkroom import ledger
from darkroom.api.routes import handle
from darkroom.observability import logger, metrics


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # What a request does to a job (its submission, its cancel) is that job's AWS use, the request itself included.
    with ledger.metering(context, apigw_requests=1):
        return handle(event)
