"""
Hostile tests: small, bounded attackers (servers, clients, inputs) aimed at
a real orchestrator, each asserting that its memory and descriptors stay
bounded and that supervision keeps its latency during the attack.
"""
