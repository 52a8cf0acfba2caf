"""The embedded API Gateway answers every method as API Gateway's HTTP API does: a method a route takes (an
ANY route takes them all) reaches its function; any other is 404 `{"message": "Not Found"}` in JSON, never
BaseHTTPRequestHandler's 501 HTML page."""
import http.client
import json

import pytest
from stillhouse_local.http_gateway import HttpGateway
from stillhouse_local.template import HttpRoute


class Function:
    def __init__(self):
        self.methods = []

    def invoke(self, event):
        self.methods.append(event["requestContext"]["http"]["method"])
        return {"statusCode": 405, "headers": {"content-type": "application/json", "Allow": "GET"},
                "body": json.dumps({"error": {"code": "method_not_allowed"}})}


class Functions:
    def __init__(self):
        self.api = Function()

    def get(self, name):
        return self.api


@pytest.fixture
def gateway():
    functions = Functions()
    running = HttpGateway([HttpRoute("Api", "ANY", "/v1/{proxy+}"), HttpRoute("Api", "GET", "/openapi.json")],
                          functions, port=0)
    running.start()
    yield running, functions.api
    running.stop()


def exchange(gateway, method, path):
    host, port = gateway._server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=5)
    connection.request(method, path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "HEAD", "PROPFIND", "BREW"])
def test_any_method_on_an_any_route_reaches_its_function(gateway, method):
    running, function = gateway
    response, body = exchange(running, method, "/v1/jobs")
    assert response.status == 405 and response.getheader("Allow") == "GET"
    assert function.methods == [method]
    assert body == (b"" if method == "HEAD" else b'{"error": {"code": "method_not_allowed"}}')


@pytest.mark.parametrize("method", ["TRACE", "OPTIONS", "POST", "BREW"])
def test_a_method_no_route_takes_is_api_gateways_404_json(gateway, method):
    running, function = gateway
    response, body = exchange(running, method, "/openapi.json")
    assert response.status == 404 and response.getheader("content-type") == "application/json"
    assert json.loads(body) == {"message": "Not Found"}
    assert function.methods == []


def test_head_of_an_unrouted_path_has_the_headers_of_the_404_and_no_body(gateway):
    running, _ = gateway
    response, body = exchange(running, "HEAD", "/nowhere")
    assert response.status == 404 and int(response.getheader("content-length")) > 0 and body == b""
