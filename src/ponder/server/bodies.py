"""Request bodies: parsed straight from bytes by pydantic-core, and declared in the OpenAPI schema by hand.

FastAPI's body parameters go through json.loads, dependency solving and a second validation pass; on the
generation endpoints that was about a quarter of the server's own time per request. The handlers read the bytes
and call `Model.model_validate_json` instead, which parses and validates in one pass in Rust. Because FastAPI
then no longer sees the body, `declare_bodies` adds each endpoint's request schema to /openapi.json (so clients
and schemathesis still see it). A body that is not JSON, or that does not fit the schema, is a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError

from ponder.server.errors import ApiError

T = TypeVar("T", bound=BaseModel)


def validation_error(errors: Sequence[Mapping[str, Any]]) -> ApiError:
    """The ApiError for pydantic errors: a 400 (as OpenAI answers a bad parameter), naming the first bad field."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = f"invalid request: {param or 'body'}: {first.get('msg', 'does not match the schema')}"
    return ApiError(400, message, param=param, code="invalid_request")


async def parse(request: Request, model: type[T]) -> T:
    """The request's body as `model`, or an ApiError."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False, include_context=False)) from None


def declare_bodies(api: FastAPI, bodies: Mapping[str, type[BaseModel]]) -> None:
    """Make api.openapi() describe `bodies` (POST path -> request model) as the JSON request bodies."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = get_openapi(title=api.title, version=api.version, summary=api.summary, routes=api.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in bodies.items():
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(js.pop("$defs", {}))
            components[model.__name__] = js
            schema["paths"][path]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
            }
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]
