"""The HTTP search API."""
