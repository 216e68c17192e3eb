"""Evaluation: perceptibility, natural corruptions, sanity checks, the security curve and the
results store. These compute on a model and its results; the jobs that run attacks live in
:mod:`medfool.runs`."""
