"""Schemathesis hooks for deploy/fuzz/run.sh (loaded through SCHEMATHESIS_HOOKS).

An `Idempotency-Key` sent again with another body is refused with 422
`idempotency_key_reused`, as draft-ietf-httpapi-idempotency-key-header asks. That depends on
what was sent before, which a schema cannot say, and Schemathesis draws the same short keys
for many different bodies; so each valid key gets a unique suffix and every request is a
first use. Invalid keys (empty, too long, spaces) are left as drawn, to stay invalid.

`cookies` must be real cookies (cookies.txt lines, or cookie names and values for the URL's
domain), a grammar JSON Schema cannot state; the server answers anything else with 422
`invalid_cookies` (tested in crates/api/tests/cookies.rs). So cookies the schema allows (a
string, or an object of strings) are replaced by a valid pair before the call; cookies of the
wrong type are left as drawn, to stay invalid.
"""

import re
import uuid

import schemathesis

_VALID = re.compile(r"^[\x21-\x7E]{1,222}$")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key":
            value = headers[name]
            if isinstance(value, str) and _VALID.match(value):
                headers[name] = f"{value}-{uuid.uuid4().hex}"
    body = case.body
    if isinstance(body, dict) and "cookies" in body:
        cookies = body["cookies"]
        schema_valid = isinstance(cookies, str) or (
            isinstance(cookies, dict) and all(isinstance(v, str) for v in cookies.values())
        )
        if schema_valid:
            body["cookies"] = {"session": "fuzz"}
