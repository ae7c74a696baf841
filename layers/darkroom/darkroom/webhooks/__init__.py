"""Webhooks: signed events about ended jobs, delivered to each job's URL and to the endpoints a tenant registers."""
