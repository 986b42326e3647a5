"""Faust agents; each module has ``register(app, ctx)``."""
