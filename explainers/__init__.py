"""Explainers: a unit's explanation contexts in, an Explanation record out."""
