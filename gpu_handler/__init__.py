"""The stillhouse GPU worker: a RunPod serverless handler plus the inference engine behind it.

`handler.py` is the RunPod entry point; everything else is plain Python that can be imported and tested
without the RunPod runtime. Importing this package is cheap: torch and transformers are imported only
when a model is first needed, so diagnostic jobs (echo, sleep) never pay for them.
"""
