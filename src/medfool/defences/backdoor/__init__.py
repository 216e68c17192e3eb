"""Backdoor detection and mitigation.

Training-set detectors (activation clustering, spectral signatures, STRIP on training
images) return :class:`SampleFlags` over the training set; STRIP also screens inputs at
inference; Neural Cleanse reverse-engineers a trigger per class and finds the infected one.
"""

from medfool.defences.backdoor.clustering import activation_clustering
from medfool.defences.backdoor.flags import SampleFlags, detection_rates
from medfool.defences.backdoor.spectral import spectral_signatures

__all__ = ["SampleFlags", "activation_clustering", "detection_rates", "spectral_signatures"]
