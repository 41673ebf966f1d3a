"""The Lambda entry point: thin, decorated, no business logic."""
