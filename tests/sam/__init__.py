"""SAM tier: `sam build` of template.yaml, and what it produces.

Needs: a Python 3.12 (the functions' runtime; pyenv's will do) and the package registry: scripts/sam.sh
installs aws-sam-cli into a venv of its own once per machine (~2 min), and `sam build` downloads the layer's
requirements for arm64 (cached afterwards). Skipped, saying so, where no Python 3.12 is found.
Takes about a minute when the caches are warm. `sam validate --lint` runs in `make test` itself.
Run: `make test`, or `pytest tests/sam`.
"""
