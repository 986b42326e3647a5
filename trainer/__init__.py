"""SentryML trainer."""
