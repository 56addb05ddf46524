"""The HTML report that ``tamis demo`` writes; every tool contributes a :class:`Section`."""

from tamis.report.html import Section, write_report

__all__ = ["Section", "write_report"]
