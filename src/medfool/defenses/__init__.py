"""Defences: detecting and removing tampering (backdoor detection lives in ``backdoor``)."""
