"""The function's Powertools logger (JSON lines), shared by the handler and the logic.

One instance, so the Lambda context the handler injects is on every line the logic logs.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="fraud-notifier")
