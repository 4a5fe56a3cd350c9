"""
Health: scheduling probes and judging their results.

L{monitor.HealthMonitor} runs one process's probe on the reactor's clock
(fast while it starts, then every C{interval}) and turns results into
healthy/unhealthy transitions; L{results} holds L{results.ProbeResult} and
the short reasons a failed check is reported with.  The probe kinds
themselves are plugins (C{plugins/probes.py}).
"""
