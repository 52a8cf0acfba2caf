"""Routing: which endpoints exist, their shared state and breakers, the policies that order them, placing a job,
and learning from results.
"""
