"""Tiering: which volumes take data, and moving studies between tiers."""
