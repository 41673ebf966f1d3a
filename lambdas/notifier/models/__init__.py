"""The notifier's data: the alert read from the stream, and the environment it runs in."""
