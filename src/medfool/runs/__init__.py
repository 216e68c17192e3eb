"""Runs: every long job, between the command line and the library.

An attack run (:mod:`~medfool.runs.attack`, :mod:`~medfool.runs.patch`), a pixel analysis
(:mod:`~medfool.runs.analyze`), a poisoning experiment (:mod:`~medfool.runs.poisoning`), a
training run (:mod:`~medfool.runs.train`), the audit (:mod:`~medfool.runs.audit`) and the
demo (:mod:`~medfool.runs.demo`). Each takes a small frozen job description and a ``say``
callback (its only output channel besides its files), checks everything before it writes
anything, and writes its results atomically. The command line (:mod:`medfool.cli`) parses
options into a job and makes one call here.
"""
