"""Adapters for the five vendor APIs in shared/seeds/, each thin over the same core.

Each module exposes `router`; errors under its paths are rendered in the vendor's format via
`api.problems.register_surface`. Adapters hold no business rule and never import each other.
"""
