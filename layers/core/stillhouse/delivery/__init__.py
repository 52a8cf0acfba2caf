"""Delivery: pushing a finished job to the caller's webhook, signed."""
