"""Evaluation: clean metrics now; robustness curves and perceptibility as attacks land."""
