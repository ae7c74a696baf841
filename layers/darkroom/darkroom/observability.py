"""The Logger and Metrics every function shares, configured only by POWERTOOLS_* variables from the template.

Log with structured keys (job_id, tenant, model, size, quality, latency_ms, cost_usd). Never log a prompt, an API key
or a provider key.
"""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Logger, Metrics

# Health checks and reads publish no metrics; that is expected, not worth a warning per request.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger()
metrics = Metrics()
