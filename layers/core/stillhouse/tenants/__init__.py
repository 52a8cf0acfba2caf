"""Tenants: who they are, their limits, and the quotas that hold them to those limits."""
