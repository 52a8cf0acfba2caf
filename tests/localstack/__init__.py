"""LocalStack tier: the embedded stack with LocalStack as its AWS instead of moto (same code, same template).

Needs: Python 3.13, a JDK >= 17, npm and the package registries, once: the tier's fixture runs
scripts/localstack.sh, which installs LocalStack once per machine into ~/.cache/stillhouse (~1-4 min the
first time, nothing after; `make test` does it before pytest) and starts it on a free port of 127.0.0.1
for the tier, stopping it afterwards (its run folder is .localstack/). A LocalStack already
running is used instead when LOCALSTACK_HOST names it. Where none can be installed or started, every test
is skipped with the script's reason (shown by -ra). Takes 1-2.5 min once installed (~30 s of it the
stack's start: LocalStack's CloudFormation creates the tables and queues one by one).
Run: `make test`, or `pytest tests/localstack`.
"""
