"""The HTTP shell: request rules, the uvicorn fast path, the Starlette routes, the OpenAPI document."""
