"""The Logger and Metrics every function shares, configured only by POWERTOOLS_* variables from the template.

Log with structured keys (job_id, tenant, model, size, quality, latency_ms, cost_usd). Never log a prompt, an API key
or a provider key.
"""

from __future__ import annotations

import os
import warnings

from aws_lambda_powertools import Logger, Metrics

# Health checks and reads publish no metrics; that is expected, not worth a warning per request.
warnings.filterwarnings("ignore", message="No application metrics to publish")

# The template's POWERTOOLS_* variables win; the defaults keep tests and tools that import darkroom first working.
logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "darkroom"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Darkroom"))
