"""Worker tier: the GPU worker (gpu_handler/) on tiny random models built in conftest and on the real
packaged models (marked `slow`), including subprocesses that run the unchanged worker script.

Needs: the `gpu` extra and the packaged models (requirements-models.txt); no network, no GPU (CPU is
enough). Takes about 40 s on 2 cores with a warm cache (`-m "not slow"`: about 15 s).
Run: `make test-worker`.
"""
