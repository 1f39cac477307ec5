"""Isolation for user code (tools, reward functions): bubblewrap sandboxes and long-lived tool servers."""
