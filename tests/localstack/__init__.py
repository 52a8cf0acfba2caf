"""LocalStack tier: the same store and queue code against a real LocalStack (tables from template.yaml).

Needs: a reachable LocalStack (LOCALSTACK_URL, default http://localhost:4566); every test is skipped
otherwise (shown by -ra). Takes a few seconds when one is up, none otherwise.
Run: `localstack start -d`, then `make test` or `pytest tests/localstack`.
"""
