"""
The built-in plugins: probe kinds, restart policies and notifiers,
registered through the same hooks as third-party plugins.
"""
