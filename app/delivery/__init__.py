"""Getting records out exactly once: the dead-letter record, the ids already published,
DynamoDB items and errors, and the one backoff policy."""
