"""Pod networking through CNI plugins, and the readiness the runtime reports for it."""
