"""Rendering: turns results into PNG / HTML / JSON. Computes nothing new."""
