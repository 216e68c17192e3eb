"""The closed vocabularies: every fixed set of words medfool takes for an option or a file field.

Each set is a ``Literal`` type (what mypy checks every parameter, field and comparison
against: a misspelt ``task == "multi-lable"`` is an error) and a tuple of its values in the
order messages and ``--help`` list them (what runtime checks and argparse ``choices`` use).
Values read from files, JSON or the command line are still checked where they are read, with
the messages those places give; the types only say what is left once they pass.

The bottom layer: this module imports nothing from medfool, so every layer can use it.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = [
    "BINARY", "COMBINE", "DEVICE_CHOICES", "ENSEMBLE_CHOICES", "LOSSES", "MULTI_CLASS", "MULTI_LABEL", "NORMS",
    "OUTPUTS", "PRESET_NAMES", "SPLITS", "TASKS", "AttackKind", "BudgetKind", "Combine", "Device",
    "EnsembleChoice", "Loss", "MeasuredNorm", "Norm", "Output", "Preset", "SplitName", "Task",
]

# -- models -------------------------------------------------------------------------------------
Task = Literal["multi-class", "binary", "multi-label"]
"""What a model answers: one class of several; one of two (one or two logits); independent 0/1 labels."""
TASKS: tuple[Task, ...] = get_args(Task)
MULTI_CLASS: Final = "multi-class"
BINARY: Final = "binary"
MULTI_LABEL: Final = "multi-label"

Output = Literal["probs", "labels"]
"""What a predict-only model answers with: class probabilities, or labels only."""
OUTPUTS: tuple[Output, ...] = get_args(Output)

Combine = Literal["mean", "vote"]
"""How an ensemble joins its members: the mean of their logits, or a majority vote."""
COMBINE: tuple[Combine, ...] = get_args(Combine)

# -- data ---------------------------------------------------------------------------------------
SplitName = Literal["train", "val", "test"]
"""A dataset's splits (the class holding one is :class:`medfool.data.dataset.Split`)."""
SPLITS: tuple[SplitName, ...] = get_args(SplitName)

# -- attacks ------------------------------------------------------------------------------------
Norm = Literal["linf", "l2"]
"""The Lp ball of an ``eps`` budget."""
NORMS: tuple[Norm, ...] = get_args(Norm)

MeasuredNorm = Literal["linf", "l2", "l0"]
"""The norm an attack's perturbation is bounded in: an Lp ball, or a count of changed pixels (l0)."""

Loss = Literal["ce", "margin", "dlr"]
"""What a gradient attack maximises: cross-entropy, the negative margin, or AutoAttack's DLR
(each attack takes a subset, checked by its config)."""
LOSSES: tuple[Loss, ...] = get_args(Loss)

AttackKind = Literal["per-image", "universal"]
"""Every image its own perturbation, or one perturbation (or patch) crafted once and applied to all."""

BudgetKind = Literal["norm", "area"]
"""What an attack's budget limits: an Lp ball (``eps``), or the share of the image covered."""

Preset = Literal["standard", "fast"]
"""The reliable-evaluation ensemble's budgets: AutoAttack's own, or the demo's."""
PRESET_NAMES: tuple[Preset, ...] = get_args(Preset)

EnsembleChoice = Literal["standard", "fast", "off"]
"""An audit's ensemble: a preset, or none."""
ENSEMBLE_CHOICES: tuple[EnsembleChoice, ...] = get_args(EnsembleChoice)

# -- running ------------------------------------------------------------------------------------
Device = Literal["auto", "cpu", "cuda"]
"""Where to compute (``auto``: CUDA when present)."""
DEVICE_CHOICES: tuple[Device, ...] = get_args(Device)
