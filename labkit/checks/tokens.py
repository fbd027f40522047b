"""Exercise checkers (see labkit.checks._core for the pattern)."""

__all__: list[str] = []
