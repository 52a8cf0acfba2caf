"""Local stand-in of RunPod serverless (moved into a package; split by concern in the next commit)."""
from stillhouse_local.runpod_standin.engine import RunPodStandIn

__all__ = ["RunPodStandIn"]
