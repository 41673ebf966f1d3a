"""The local stack: Kafka and DynamoDB on 127.0.0.1 for tests and the demo."""
