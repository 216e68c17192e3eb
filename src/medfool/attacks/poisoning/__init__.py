"""Training-set tampering: backdoor triggers and poisoners (``backdoor``), availability
poisoning (``availability``). Training on a poisoned set is the normal training loop
(:func:`medfool.models.train.fit` with ``train_split=``); end-to-end experiments with
detection and retraining live in :mod:`medfool.runs.poisoning`."""
