"""Integration tier: the embedded stack (moto server, in-process Lambdas, Step Functions, the RunPod stand-in
running the real worker with its packaged model), one per session, reached over real HTTP on 127.0.0.1.

Needs: the local, gpu and dev extras and the packaged models; free local ports; no network, no GPU.
Takes about 3.5 min on 2 cores (adaptive routing and breaker scenarios are most of it).
Run: `make test-integration`.
"""
