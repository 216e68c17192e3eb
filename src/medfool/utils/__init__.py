"""Small helpers shared across medfool (atomic writes, seeding, devices, progress)."""
