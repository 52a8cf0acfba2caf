"""Fakes and helpers that more than one test module uses: their one home.

Test modules import from here (`from tests.support.clock import Clock`), never from another test module
or a conftest. A fake that only one module uses stays in that module.

- clock: `Clock`, a settable time source (`T0` its default start)
- tables: DynamoDB tables built from template.yaml's own `AWS::DynamoDB::Table` resources
- jobs: `make_job`, a stored job with sensible defaults
- fakes: RunPod, router and workflow fakes as dispatch and callbacks see them, and `make_dispatcher`
- callbacks: `recorder`, a CallbackRecorder wired to fakes, and the `SECRET` its tokens are signed with
"""
