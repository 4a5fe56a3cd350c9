"""
The pluggy side: the hook specifications (L{specs}) and the per-service
plugin manager that registers the built-ins, entry points and YAML-listed
modules and collects the kinds they register (L{manager}).

Plugin authors import from L{orchestrator.plugin}, not from here.
"""
