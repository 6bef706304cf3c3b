"""The user-facing commands (serve, render, demo, tune, bench, devices, status)."""
