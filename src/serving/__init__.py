"""Serving a finished run: its fold ensemble exported as one SavedModel, and the drawing page."""
