"""Figures, tables and the static results page."""
