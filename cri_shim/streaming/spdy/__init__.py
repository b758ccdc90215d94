"""SPDY/3.1: frames, header compression and the server side of a session."""
