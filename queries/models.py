"""Saved queries and API keys (issue: query engine and API)."""
