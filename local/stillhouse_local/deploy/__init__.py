"""`stillhouse deploy`: RunPod templates and endpoints as code (deploy/runpod.yaml), planned against what
RunPod has, applied idempotently, then registered in the router's endpoint registry.

An operator tool, run from a laptop or CI: it is not part of the Lambda layer.
"""
