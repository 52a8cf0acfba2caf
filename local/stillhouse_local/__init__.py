"""The embedded runtime (`stillhouse up`): moto, in-process Lambdas, HTTP shim, RunPod stand-in.

Never imported by deployed code paths.
"""
