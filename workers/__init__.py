"""SentryML workers."""
