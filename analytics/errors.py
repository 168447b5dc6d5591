"""Errors an analysis raises when it cannot answer (the bot turns them into plain replies)."""

from __future__ import annotations


class AnalyticsError(Exception):
    """Base class of the errors analytics functions raise on purpose."""


class NotAvailable(AnalyticsError):
    """The loaded data lacks what the analysis needs (e.g. UCI Online Retail has no deliveries)."""


class EmptyResult(AnalyticsError):
    """Reserved for callers that want to treat an empty answer as an error.

    Analyses themselves never raise it: an empty filter gives an empty-but-valid result.
    """
