"""SentryML schemas."""
