"""Running containers: runc invocation, the conmon monitor, exit detection, exec, lifecycle."""
