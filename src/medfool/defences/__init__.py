"""Defences and their evaluation against the attacker who knows them.

* ``robust_training``: objectives for the one training loop (PGD, TRADES, fast FGSM, noise);
* ``input_transforms``: a trained model behind input transforms (the layers are in
  ``medfool.models.preprocess``; ensembles in ``medfool.models.ensemble``);
* ``detectors``, ``detector_attack``: adversarial-image detectors and the joint-loss attack on them;
* ``smoothing``: randomized-smoothing certificates;
* ``evaluation``: naive, masking-check and adaptive attackers, side by side;
* ``backdoor``: detecting and removing training-time tampering.
"""
