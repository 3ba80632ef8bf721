"""Protocols of the embedded test server, one module per protocol, found by name.

A protocol module defines ``setup(server: FakeServer) -> None``, which adds its routes with
``server.add_route(method, path, handler, error_body=...)`` so faults and counting apply to them.
"""
