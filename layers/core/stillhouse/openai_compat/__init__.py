"""OpenAI's API as a front door: its requests become jobs, jobs' results become its answers.

`schemas` (the wire shapes), `translate` (request -> job, job -> answer), `front_door` (submit, wait,
stream). The HTTP routes that call it are `stillhouse.http.openai_api` (buffered, behind API Gateway)
and `stillhouse.http.openai_stream` (the streaming front). docs/openai.md is the user's page."""
