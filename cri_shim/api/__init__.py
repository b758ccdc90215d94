"""Stubs generated from proto/runtime/v1/api.proto by scripts/gen-proto; never edited by hand."""
