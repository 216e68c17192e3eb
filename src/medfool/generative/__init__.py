"""Generative threats: fake images made by a GAN, and how real they look."""
