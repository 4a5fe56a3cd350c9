"""
Command-line programs: C{orchestrator} (L{main}: check-config,
config-reference) and C{orchestratorctl} (L{ctl}: the admin API from a
shell).  C{twistd orchestrator} is L{orchestrator.tap}.
"""
