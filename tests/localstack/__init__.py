"""LocalStack tier: the embedded stack with LocalStack as its AWS instead of moto (same code, same template).

Needs: Python 3.13, a JDK >= 17, npm and the package registries, once: the tier's fixture runs
scripts/localstack.sh, which installs LocalStack into .localstack/ (~1-2 min the first time, nothing after)
and starts it on a free port of 127.0.0.1 for the tier, stopping it afterwards. A LocalStack already
running is used instead when LOCALSTACK_HOST names it. Where none can be installed or started, every test
is skipped with the script's reason (shown by -ra). Takes about a minute once installed.
Run: `make test`, or `pytest tests/localstack`.
"""
