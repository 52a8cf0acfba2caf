"""Outputs: large results kept in S3, and the result cache."""
