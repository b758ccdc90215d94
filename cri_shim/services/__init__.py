"""Thin gRPC handlers, one module for each group of RPCs, over the domain packages.

A service object has async methods named exactly as the RPCs it serves, taking
(request, context) and returning the response message; cri_shim.server binds them.
"""
