"""SentryML streams."""
