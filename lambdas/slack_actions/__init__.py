"""Slack's interaction requests (the alert message's buttons) -> a case closed.

Entry points on AWS: ``lambdas.slack_actions.handler.handler`` behind a Lambda function
URL (Slack signs its requests, so the URL has no AWS auth), and
``lambdas.slack_actions.closer.handler``, the same close run inside the VPC where the
workers' internal load balancer is. Locally ``python -m infra.local.slack_actions``
serves the first on loopback and closes directly (no second function).

Every request is verified with the app's signing secret (slack_sdk's
``SignatureVerifier``: a timestamp more than 5 minutes away is refused), and a request
seen before (same timestamp and signature) is refused as a replay (a conditional put in
DynamoDB that expires by itself). Each refusal is logged with its reason, never with
the secret. A button closes the case through the one close path there is, the workers'
``POST /cases/{case_id}/close`` (which also publishes the label), and the message is
then updated through the request's ``response_url``.
"""
