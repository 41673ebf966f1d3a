"""Unit tests of the notifier Lambda (lambdas/notifier), one file per module."""
