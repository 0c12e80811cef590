"""Scoring predictions against references, and comparing models."""
