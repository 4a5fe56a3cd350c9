"""
Health: scheduling probes and judging their results.

L{monitor.HealthMonitor} runs one process's probe on the reactor's clock
(fast while it starts, then every C{interval}) and turns results into
healthy/unhealthy transitions; L{results} holds L{results.ProbeResult} and
the short reasons a failed check is reported with; L{httpclient} is the
http probe's lean, bounded keep-alive HTTP/1.1 client and L{stats} the
metric families of the probes' bounds and cap.  The probe kinds themselves
are plugins (C{plugins/probes.py}).
"""
