"""`cache: true`: a deterministic job asked again is answered from the first result, with no GPU work."""


def test_the_same_cached_request_is_answered_from_the_first_result(api, stack, receiver):
    body = {"text": "cache me"}
    first = api.wait(api.submit("echo", body, cache=True))
    assert first["status"] == "COMPLETED"
    runs_before = stack.standin.stats("local").get("COMPLETED", 0)

    response = api.post("/v1/jobs", {"task": "echo", "input": body, "cache": True, "webhook": receiver.url})
    assert response.status_code == 202 and response.json()["status"] == "COMPLETED"
    second = api.get(f"/v1/jobs/{response.json()['id']}").json()
    assert second["output"] == first["output"] and second["cached_from"] == first["id"]
    assert second["runpod_id"] is None and second["events"][-1]["actor"] == "cache"
    assert stack.standin.stats("local").get("COMPLETED", 0) == runs_before  # the worker never saw it
    (call,) = receiver.wait_for(1)
    assert call["json"]["id"] == second["id"] and call["json"]["output"] == first["output"]


def test_another_tenant_does_not_get_my_cached_result(api, other_tenant):
    mine = api.wait(api.submit("echo", {"text": "private"}, cache=True))
    theirs = other_tenant.wait(other_tenant.submit("echo", {"text": "private"}, cache=True))
    assert theirs["status"] == "COMPLETED" and theirs["cached_from"] is None
    assert theirs["runpod_id"] and theirs["runpod_id"] != mine["runpod_id"]


def test_caching_a_sampled_generation_is_refused_and_nothing_is_written(api):
    before = api.get("/v1/jobs", params={"limit": 100}).json()["items"]
    response = api.post("/v1/jobs", {"task": "generate", "input": {"prompt": "p", "temperature": 0.8}, "cache": True})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "cache"
    assert api.get("/v1/jobs", params={"limit": 100}).json()["items"] == before
