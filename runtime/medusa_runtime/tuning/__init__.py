"""Offline tuning: training heads, calibrating trees, prompt sets and the small test model."""
