"""Scorers: an explanation and held-out contexts in, judgment and simulation records out."""
