"""stillhouse: a serverless GPU job router (core library, deployed as a Lambda layer)."""

__version__ = "0.1.0"
