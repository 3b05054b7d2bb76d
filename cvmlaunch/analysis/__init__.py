"""Explaining, comparing and searching launch measurements."""
