"""Steering: clamp units during generation, and what it does to the next-token distribution."""
